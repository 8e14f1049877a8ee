//! The certificate lifecycle in the index (proto-spec.md §14): enrollment
//! tokens, issued certificates, revocations and the CRL number.

use sqlx::Row;

use super::{Index, IndexError, to_i64, to_u64};

/// A token as the server keeps it.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// The device name it may enroll.
    pub name: String,
    /// K, the key of the device's proof.
    pub token_key: [u8; 32],
    /// Expiry, Unix milliseconds.
    pub expires_at_ms: u64,
    /// When it was redeemed, if it was.
    pub used_at_ms: Option<u64>,
}

/// Why a token could not be redeemed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redeem {
    /// Marked used now: issue the certificate.
    Redeemed,
    /// Another redemption came first.
    AlreadyUsed,
    /// Its time is up.
    Expired,
    /// No such token.
    Unknown,
}

/// A revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The serial, lowercase hex.
    pub serial: String,
    /// The device name.
    pub name: String,
    /// When, Unix milliseconds.
    pub revoked_at_ms: u64,
    /// The RFC 5280 reason word, if one was given.
    pub reason: Option<String>,
}

impl Index {
    /// Stores a new token.
    ///
    /// # Errors
    /// [`IndexError`] when the database cannot be written.
    pub async fn add_token(
        &self,
        id: &[u8],
        token_key: &[u8; 32],
        name: &str,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), IndexError> {
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, token_key, name, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(&token_key[..])
        .bind(name)
        .bind(to_i64(now_ms, "time")?)
        .bind(to_i64(expires_at_ms, "expiry")?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The token `id`, if there is one.
    ///
    /// # Errors
    /// [`IndexError`] when the database cannot be read.
    pub async fn token(&self, id: &[u8]) -> Result<Option<StoredToken>, IndexError> {
        let row = sqlx::query(
            "SELECT name, token_key, expires_at, used_at FROM enrollment_tokens WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key: Vec<u8> = row.try_get("token_key")?;
        let token_key = key
            .try_into()
            .map_err(|_| IndexError::BadRow("a token key that is not 32 bytes".to_owned()))?;
        let used_at: Option<i64> = row.try_get("used_at")?;
        Ok(Some(StoredToken {
            name: row.try_get("name")?,
            token_key,
            expires_at_ms: to_u64(row.try_get("expires_at")?, "token expiry")?,
            used_at_ms: used_at.map(|t| to_u64(t, "token use")).transpose()?,
        }))
    }

    /// Marks token `id` used at `now_ms`, atomically: of two concurrent
    /// redemptions exactly one sees [`Redeem::Redeemed`].
    ///
    /// # Errors
    /// [`IndexError`] when the database cannot be written.
    pub async fn redeem_token(&self, id: &[u8], now_ms: u64) -> Result<Redeem, IndexError> {
        let now = to_i64(now_ms, "time")?;
        let mut tx = self.write().await?;
        let changed = sqlx::query(
            "UPDATE enrollment_tokens SET used_at = ?
             WHERE id = ? AND used_at IS NULL AND expires_at > ?",
        )
        .bind(now)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let outcome = if changed == 1 {
            Redeem::Redeemed
        } else {
            let row = sqlx::query("SELECT used_at FROM enrollment_tokens WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                None => Redeem::Unknown,
                Some(row) => match row.try_get::<Option<i64>, _>("used_at")? {
                    Some(_) => Redeem::AlreadyUsed,
                    None => Redeem::Expired,
                },
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Records the certificate a token or a renewal gave.
    ///
    /// # Errors
    /// [`IndexError`] when the database cannot be written.
    pub async fn record_issued(
        &self,
        serial_hex: &str,
        name: &str,
        not_after_ms: u64,
        now_ms: u64,
        how: &'static str,
        token_id: Option<&[u8]>,
    ) -> Result<(), IndexError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO issued_certificates (serial, name, not_after, issued_at, how)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(serial_hex)
        .bind(name)
        .bind(to_i64(not_after_ms, "expiry")?)
        .bind(to_i64(now_ms, "time")?)
        .bind(how)
        .execute(&mut *tx)
        .await?;
        if let Some(id) = token_id {
            sqlx::query("UPDATE enrollment_tokens SET serial = ? WHERE id = ?")
                .bind(serial_hex)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The serials and expiry (Unix ms) of every certificate known for
    /// device `name`: those the server issued and those devices
    /// authenticated with.
    ///
    /// # Errors
    /// [`IndexError`] when the database cannot be read.
    pub async fn certificates_of(&self, name: &str) -> Result<Vec<String>, IndexError> {
        let rows = sqlx::query(
            "SELECT serial FROM issued_certificates WHERE name = ?
             UNION SELECT serial FROM devices WHERE name = ?
             ORDER BY serial",
        )
        .bind(name)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get("serial").map_err(IndexError::from))
            .collect()
    }

    /// The device name of a serial, when the index knows it.
    ///
    /// # Errors
    /// [`IndexError`] when the database cannot be read.
    pub async fn name_of_serial(&self, serial_hex: &str) -> Result<Option<String>, IndexError> {
        let row = sqlx::query(
            "SELECT name FROM issued_certificates WHERE serial = ?
             UNION SELECT name FROM devices WHERE serial = ? LIMIT 1",
        )
        .bind(serial_hex)
        .bind(serial_hex)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("name")).transpose()?)
    }

    /// Revokes `serial_hex`; revoking it again keeps the first record.
    /// Returns whether it was new.
    ///
    /// # Errors
    /// [`IndexError`] when the database cannot be written.
    pub async fn revoke(
        &self,
        serial_hex: &str,
        name: &str,
        reason: Option<&str>,
        now_ms: u64,
        not_after_ms: u64,
    ) -> Result<bool, IndexError> {
        let changed = sqlx::query(
            "INSERT INTO revocations (serial, name, revoked_at, reason, not_after)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING",
        )
        .bind(serial_hex)
        .bind(name)
        .bind(to_i64(now_ms, "time")?)
        .bind(reason)
        .bind(to_i64(not_after_ms, "expiry")?)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// Every revocation whose certificate has not expired by `now_ms`,
    /// oldest first: what the next CRL lists.
    ///
    /// # Errors
    /// [`IndexError`] when the database cannot be read.
    pub async fn revocations(&self, now_ms: u64) -> Result<Vec<Revocation>, IndexError> {
        let rows = sqlx::query(
            "SELECT serial, name, revoked_at, reason FROM revocations
             WHERE not_after >= ? ORDER BY revoked_at, serial",
        )
        .bind(to_i64(now_ms, "time")?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Revocation {
                    serial: r.try_get("serial")?,
                    name: r.try_get("name")?,
                    revoked_at_ms: to_u64(r.try_get("revoked_at")?, "revocation time")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// The next CRL number (1 for the first), counted in the index so that
    /// numbers only grow.
    ///
    /// # Errors
    /// [`IndexError`] when the database cannot be written.
    pub async fn next_crl_number(&self) -> Result<u64, IndexError> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO crl_state (id, number) VALUES (1, 1)
             ON CONFLICT (id) DO UPDATE SET number = number + 1",
        )
        .execute(&mut *tx)
        .await?;
        let number: i64 = sqlx::query("SELECT number FROM crl_state WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?
            .try_get("number")?;
        tx.commit().await?;
        to_u64(number, "CRL number")
    }
}
