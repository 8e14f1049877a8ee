//! Reading and writing message bodies: a bounded reader over a byte slice
//! and big-endian writers. Every variable-length field is read through a
//! length that is checked against the bytes left and against the field's
//! own limit, and a message must consume its body exactly.

use super::DecodeError;

/// A cursor over one message body.
pub(crate) struct Reader<'a> {
    msg: &'static str,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(msg: &'static str, buf: &'a [u8]) -> Self {
        Self { msg, buf }
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated {
                msg: self.msg,
                field,
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A field with a u16 length prefix whose length must lie in `min..=max`.
    pub(crate) fn vec_u16(
        &mut self,
        field: &'static str,
        min: usize,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16(field)?);
        if len < min || len > max {
            return Err(self.invalid(field, "length out of range"));
        }
        self.take(len, field)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn invalid(&self, field: &'static str, reason: &'static str) -> DecodeError {
        DecodeError::Invalid {
            msg: self.msg,
            field,
            reason,
        }
    }

    /// Refuses trailing bytes.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing {
                msg: self.msg,
                len: self.buf.len(),
            })
        }
    }
}

/// Appends a u16-length-prefixed field. Callers keep fields within their
/// (far smaller) limits, so the length always fits.
pub(crate) fn put_vec_u16(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads() {
        let mut r = Reader::new("T", &[0, 2, 9, 9, 1]);
        assert_eq!(r.vec_u16("f", 0, 2).unwrap(), &[9, 9]);
        assert!(matches!(
            r.u16("g"),
            Err(DecodeError::Truncated { field: "g", .. })
        ));
        let mut r = Reader::new("T", &[0, 3, 1, 2, 3]);
        assert!(matches!(
            r.vec_u16("f", 0, 2),
            Err(DecodeError::Invalid { .. })
        ));
        let mut r = Reader::new("T", &[0, 9, 1]);
        assert!(matches!(
            r.vec_u16("f", 0, 100),
            Err(DecodeError::Truncated { .. })
        ));
        let r = Reader::new("T", &[1]);
        assert_eq!(r.finish(), Err(DecodeError::Trailing { msg: "T", len: 1 }));
    }
}
