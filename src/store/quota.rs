//! Storage accounting (proto-spec.md §8.3.4): per-device quotas on bytes
//! and files, a cap on each device's uploads in flight, and a reserve of
//! free space on the data folder's file system.
//!
//! Usage is counted once, when the store opens, and then kept in memory: an
//! upload reserves its declared size at `OPEN` (before any content is
//! written), gives the reservation back if it fails or is abandoned, and
//! turns it into stored usage when it is published. Every check counts the
//! uploads in flight, so concurrent sessions of one device cannot together
//! exceed its quota.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytesize::ByteSize;

/// The storage limits of the server (proto-spec.md §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most bytes a device may store, uploads in flight included.
    pub quota_bytes_per_device: u64,
    /// Most files a device may store, uploads in flight included.
    pub quota_files_per_device: u64,
    /// Most uploads of one device in flight at once, over all its sessions.
    pub max_uploads_per_device: usize,
    /// Free space the data folder's file system keeps: an upload that would
    /// leave less (counting what uploads in flight have yet to write) is
    /// refused.
    pub min_free_space: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            quota_bytes_per_device: 256 << 30,
            quota_files_per_device: 100_000,
            max_uploads_per_device: 4,
            min_free_space: 1 << 30,
        }
    }
}

/// A setting of [`StoreLimits`] that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LimitsError(&'static str);

impl StoreLimits {
    /// Checks that every limit allows some upload (`min_free_space` may be
    /// 0: no reserve).
    ///
    /// # Errors
    /// One sentence naming the setting.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.quota_bytes_per_device == 0 {
            return Err(LimitsError(
                "quota_bytes_per_device must be more than 0, or no device could store anything",
            ));
        }
        if self.quota_files_per_device == 0 {
            return Err(LimitsError(
                "quota_files_per_device must be at least 1, or no device could store anything",
            ));
        }
        if self.max_uploads_per_device == 0 {
            return Err(LimitsError(
                "max_uploads_per_device must be at least 1, or no device could upload anything",
            ));
        }
        Ok(())
    }
}

/// Why an upload is refused before it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The device's byte quota would be exceeded.
    #[error(
        "the device has {} of its {} quota in use; this file needs {}",
        ByteSize(*used),
        ByteSize(*quota),
        ByteSize(*size)
    )]
    QuotaBytes {
        /// Bytes stored and reserved by uploads in flight.
        used: u64,
        /// The quota.
        quota: u64,
        /// The declared size of the refused file.
        size: u64,
    },
    /// The device's file quota would be exceeded.
    #[error("the device has {files} of its {quota} files in use")]
    QuotaFiles {
        /// Files stored and uploads in flight.
        files: u64,
        /// The quota.
        quota: u64,
    },
    /// The device has as many uploads in flight as it may.
    #[error(
        "the device already has as many uploads in progress as it may ({max}); retry when one has ended"
    )]
    Busy {
        /// Uploads in flight.
        uploads: usize,
        /// The cap (equal to `uploads`).
        max: usize,
    },
    /// The file system would go below its reserve.
    #[error(
        "the server has {} free{} and keeps {} in reserve; this file needs {}",
        ByteSize(*available),
        if *pending > 0 { format!(", of which uploads in progress still need {},", ByteSize(*pending)) } else { String::new() },
        ByteSize(*reserve),
        ByteSize(*size)
    )]
    InsufficientStorage {
        /// Free space available to the server.
        available: u64,
        /// What uploads in flight have reserved and not yet written.
        pending: u64,
        /// The reserve.
        reserve: u64,
        /// The declared size of the refused file.
        size: u64,
    },
}

/// What a device uses.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of stored files.
    pub stored_bytes: u64,
    /// Stored files.
    pub stored_files: u64,
    /// Uploads in flight.
    pub uploads: usize,
    /// Bytes reserved by uploads in flight.
    pub reserved_bytes: u64,
}

/// What a device stores, as the index counts it at start-up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stored {
    pub(super) bytes: u64,
    pub(super) files: u64,
}

struct InFlight {
    id: u64,
    size: u64,
    /// Bytes the writer thread has written so far.
    written: Arc<AtomicU64>,
}

#[derive(Default)]
struct DeviceUsage {
    stored_bytes: u64,
    stored_files: u64,
    in_flight: Vec<InFlight>,
}

impl DeviceUsage {
    fn reserved_bytes(&self) -> u64 {
        self.in_flight.iter().map(|u| u.size).sum()
    }
}

#[derive(Default)]
struct State {
    devices: HashMap<String, DeviceUsage>,
    next_id: u64,
}

/// Usage of every device, and the uploads in flight.
pub(super) struct Ledger {
    limits: StoreLimits,
    state: Mutex<State>,
}

impl Ledger {
    /// A ledger starting from the usage the index counted.
    pub(super) fn new(limits: StoreLimits, stored: HashMap<String, Stored>) -> Self {
        let devices = stored
            .into_iter()
            .map(|(device, s)| {
                let usage = DeviceUsage {
                    stored_bytes: s.bytes,
                    stored_files: s.files,
                    in_flight: Vec::new(),
                };
                (device, usage)
            })
            .collect();
        Self {
            limits,
            state: Mutex::new(State {
                devices,
                next_id: 0,
            }),
        }
    }

    pub(super) fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn usage(&self, device: &str) -> Usage {
        let state = self.lock();
        state
            .devices
            .get(device)
            .map_or_else(Usage::default, |d| Usage {
                stored_bytes: d.stored_bytes,
                stored_files: d.stored_files,
                uploads: d.in_flight.len(),
                reserved_bytes: d.reserved_bytes(),
            })
    }

    /// Reserves `size` bytes and one file for an upload of `device`, given
    /// the space `available` on the file system now.
    ///
    /// # Errors
    /// The first limit the upload would break: the device's quotas, its
    /// uploads in flight, then the free-space reserve.
    pub(super) fn reserve(
        self: &Arc<Self>,
        device: &str,
        size: u64,
        available: u64,
    ) -> Result<Reservation, Refusal> {
        let limits = &self.limits;
        let mut state = self.lock();
        // Bytes that uploads in flight (of every device) have yet to write.
        let pending: u64 = state
            .devices
            .values()
            .flat_map(|d| &d.in_flight)
            .map(|u| u.size.saturating_sub(u.written.load(Ordering::Relaxed)))
            .sum();
        let id = state.next_id;
        let usage = state.devices.entry(device.to_owned()).or_default();
        let files = usage.stored_files + usage.in_flight.len() as u64;
        if files >= limits.quota_files_per_device {
            return Err(Refusal::QuotaFiles {
                files,
                quota: limits.quota_files_per_device,
            });
        }
        let used = usage.stored_bytes.saturating_add(usage.reserved_bytes());
        if used.saturating_add(size) > limits.quota_bytes_per_device {
            return Err(Refusal::QuotaBytes {
                used,
                quota: limits.quota_bytes_per_device,
                size,
            });
        }
        if usage.in_flight.len() >= limits.max_uploads_per_device {
            return Err(Refusal::Busy {
                uploads: usage.in_flight.len(),
                max: limits.max_uploads_per_device,
            });
        }
        let needed = size
            .saturating_add(pending)
            .saturating_add(limits.min_free_space);
        if available < needed {
            return Err(Refusal::InsufficientStorage {
                available,
                pending,
                reserve: limits.min_free_space,
                size,
            });
        }
        let written = Arc::new(AtomicU64::new(0));
        usage.in_flight.push(InFlight {
            id,
            size,
            written: written.clone(),
        });
        state.next_id += 1;
        Ok(Reservation {
            ledger: self.clone(),
            device: device.to_owned(),
            id,
            written,
        })
    }

    /// Ends reservation `id`; if `stored` is `Some(size)`, counts a stored
    /// file of that size.
    fn settle(&self, device: &str, id: u64, stored: Option<u64>) {
        let mut state = self.lock();
        let Some(usage) = state.devices.get_mut(device) else {
            return;
        };
        usage.in_flight.retain(|u| u.id != id);
        if let Some(size) = stored {
            usage.stored_bytes = usage.stored_bytes.saturating_add(size);
            usage.stored_files += 1;
        }
    }
}

/// An upload's share of its device's quota and of the free space. Dropping
/// it gives the share back; [`Reservation::stored`] turns it into usage.
pub(super) struct Reservation {
    ledger: Arc<Ledger>,
    device: String,
    id: u64,
    written: Arc<AtomicU64>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("device", &self.device)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    /// The counter the writer thread advances as bytes reach the disk.
    pub(super) fn written(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    /// The upload was published: `size` bytes and one file are now stored.
    pub(super) fn stored(self, size: u64) {
        self.ledger.settle(&self.device, self.id, Some(size));
        // Settled: the drop below finds nothing left to release.
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.ledger.settle(&self.device, self.id, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn ledger(limits: StoreLimits) -> Arc<Ledger> {
        Arc::new(Ledger::new(limits, HashMap::new()))
    }

    fn limits() -> StoreLimits {
        StoreLimits {
            quota_bytes_per_device: 1000,
            quota_files_per_device: 3,
            max_uploads_per_device: 2,
            min_free_space: 100,
        }
    }

    #[test]
    fn defaults_are_valid_and_zeros_are_refused() {
        assert!(StoreLimits::default().validate().is_ok());
        let no_reserve = StoreLimits {
            min_free_space: 0,
            ..StoreLimits::default()
        };
        assert!(no_reserve.validate().is_ok());
        for (limits, setting) in [
            (
                StoreLimits {
                    quota_bytes_per_device: 0,
                    ..StoreLimits::default()
                },
                "quota_bytes_per_device",
            ),
            (
                StoreLimits {
                    quota_files_per_device: 0,
                    ..StoreLimits::default()
                },
                "quota_files_per_device",
            ),
            (
                StoreLimits {
                    max_uploads_per_device: 0,
                    ..StoreLimits::default()
                },
                "max_uploads_per_device",
            ),
        ] {
            let err = limits.validate().unwrap_err().to_string();
            assert!(err.starts_with(setting), "{err}");
        }
    }

    #[test]
    fn reservations_count_against_the_byte_quota_until_released() {
        let l = ledger(limits());
        let a = l.reserve("d", 600, u64::MAX).unwrap();
        assert_eq!(
            l.reserve("d", 401, u64::MAX).err(),
            Some(Refusal::QuotaBytes {
                used: 600,
                quota: 1000,
                size: 401
            })
        );
        // Another device has its own quota.
        let _other = l.reserve("e", 1000, u64::MAX).unwrap();
        let b = l.reserve("d", 400, u64::MAX).unwrap();
        drop(b); // failed upload: released
        a.stored(600);
        assert_eq!(
            l.usage("d"),
            Usage {
                stored_bytes: 600,
                stored_files: 1,
                uploads: 0,
                reserved_bytes: 0
            }
        );
        assert!(l.reserve("d", 401, u64::MAX).is_err());
        assert!(l.reserve("d", 400, u64::MAX).is_ok());
    }

    #[test]
    fn file_quota_counts_uploads_in_flight() {
        let l = Arc::new(Ledger::new(
            limits(),
            HashMap::from([(
                "d".to_owned(),
                Stored {
                    bytes: 10,
                    files: 2,
                },
            )]),
        ));
        let a = l.reserve("d", 1, u64::MAX).unwrap();
        assert_eq!(
            l.reserve("d", 1, u64::MAX).err(),
            Some(Refusal::QuotaFiles { files: 3, quota: 3 })
        );
        drop(a);
        let a = l.reserve("d", 1, u64::MAX).unwrap();
        a.stored(1);
        assert_eq!(l.usage("d").stored_files, 3);
        let err = l.reserve("d", 0, u64::MAX).unwrap_err();
        assert_eq!(err.to_string(), "the device has 3 of its 3 files in use");
    }

    #[test]
    fn uploads_in_flight_are_capped_per_device() {
        let l = ledger(limits());
        let a = l.reserve("d", 1, u64::MAX).unwrap();
        let _b = l.reserve("d", 1, u64::MAX).unwrap();
        assert_eq!(
            l.reserve("d", 1, u64::MAX).err(),
            Some(Refusal::Busy { uploads: 2, max: 2 })
        );
        assert!(l.reserve("e", 1, u64::MAX).is_ok());
        drop(a);
        assert!(l.reserve("d", 1, u64::MAX).is_ok());
    }

    #[test]
    fn free_space_counts_what_uploads_in_flight_have_yet_to_write() {
        let l = ledger(StoreLimits {
            quota_bytes_per_device: 100 * GIB,
            min_free_space: GIB,
            ..limits()
        });
        // 10 GiB free: a 6 GiB upload fits (6 + 1 reserve).
        let a = l.reserve("d", 6 * GIB, 10 * GIB).unwrap();
        // A second 4 GiB one does not while the first has written nothing.
        assert_eq!(
            l.reserve("e", 4 * GIB, 10 * GIB).err(),
            Some(Refusal::InsufficientStorage {
                available: 10 * GIB,
                pending: 6 * GIB,
                reserve: GIB,
                size: 4 * GIB
            })
        );
        // Once 5 GiB are on disk, the free space shows it, and only 1 GiB
        // of the first upload is still to come.
        a.written().store(5 * GIB, Ordering::Relaxed);
        let _e = l.reserve("e", 3 * GIB, 5 * GIB).unwrap();
        let err = l.reserve("f", GIB, 4 * GIB).unwrap_err().to_string();
        assert_eq!(
            err,
            "the server has 4.0 GiB free, of which uploads in progress still need 4.0 GiB, and keeps 1.0 GiB in reserve; this file needs 1.0 GiB"
        );
    }

    #[test]
    fn refusal_details_give_the_numbers() {
        let l = ledger(StoreLimits {
            quota_bytes_per_device: 2 * GIB,
            ..limits()
        });
        let _a = l.reserve("d", 19 * GIB / 10, u64::MAX).unwrap();
        let err = l.reserve("d", 300 << 20, u64::MAX).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the device has 1.9 GiB of its 2.0 GiB quota in use; this file needs 300.0 MiB"
        );
        let _b = l.reserve("d", 0, u64::MAX).unwrap();
        assert_eq!(
            l.reserve("d", 0, u64::MAX).unwrap_err().to_string(),
            "the device already has as many uploads in progress as it may (2); retry when one has ended"
        );
    }
}
