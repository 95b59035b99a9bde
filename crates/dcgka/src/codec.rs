//! The canonical binary encoding of §0: LEB128 varints (minimal), fixed-size byte
//! strings, `opaque` (length-prefixed bytes), `list<T>` (count-prefixed) and `opt<T>`
//! (a 0/1 flag).
//!
//! Decoding is total: any byte string yields a value or a [`DecodeError`], never a
//! panic. Nothing is allocated beyond the size of the input, and inputs larger than
//! [`MAX_MESSAGE_SIZE`] are refused up front.
//! Non-minimal varints, flags other than 0 and 1, unknown tags and trailing bytes are
//! all rejected, so every value has exactly one encoding.

use zeroize::{Zeroize, Zeroizing};

use crate::consts::{MAX_LIST_LEN, MAX_MESSAGE_SIZE};

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before the value did.
    #[error("truncated input: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Offset at which the read started.
        offset: usize,
        /// Bytes the read needed.
        needed: usize,
    },
    /// Bytes remained after a complete value.
    #[error("{0} trailing bytes after a complete value")]
    TrailingBytes(usize),
    /// A varint was longer than necessary or did not fit in 64 bits.
    #[error("non-canonical or overlong varint at offset {0}")]
    BadVarint(usize),
    /// An `opt` flag other than 0 or 1.
    #[error("invalid option flag {flag} at offset {offset}")]
    BadFlag {
        /// Offset of the flag.
        offset: usize,
        /// The flag found.
        flag: u8,
    },
    /// A tag (message kind, key reference, operation type) this version does not know.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// What was being decoded.
        what: &'static str,
        /// The tag found.
        tag: u64,
    },
    /// A version or suite byte this implementation does not speak.
    #[error("unsupported version byte {0:#04x}")]
    UnsupportedVersion(u8),
    /// The input is larger than the decoder accepts.
    #[error("input of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit, [`MAX_MESSAGE_SIZE`] for messages.
        max: usize,
    },
    /// A list has more items than [`MAX_LIST_LEN`], than the input could hold, or than its
    /// own bound ([`crate::consts::MAX_BATCH_ITEMS`] for a batch); `max` says which.
    #[error("list of {count} items exceeds the limit of {max}")]
    ListTooLong {
        /// Items announced.
        count: u64,
        /// The limit that applied.
        max: usize,
    },
    /// A set was not sorted in strictly ascending order (§0).
    #[error("set not sorted or has duplicates")]
    NotCanonicalSet,
    /// A field's value is out of its allowed range or inconsistent with another field.
    #[error("invalid field: {0}")]
    InvalidField(&'static str),
}

/// Appends encoded values to a buffer.
///
/// A writer made with [`Writer::secret`] holds secrets (a state snapshot): when its buffer
/// grows, the old allocation is zeroized before it is freed, the buffer is zeroized when
/// the writer is dropped, and `Debug` shows only its length.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
    secret: bool,
}

impl core::fmt::Debug for Writer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.secret {
            write!(f, "Writer(<redacted, {} bytes>)", self.buf.len())
        } else {
            f.debug_struct("Writer").field("buf", &self.buf).finish()
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.secret {
            self.buf.zeroize();
        }
    }
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer { buf: Vec::new(), secret: false }
    }

    /// An empty writer for secret bytes: no copy of its contents is left in freed memory.
    pub fn secret() -> Self {
        Writer { buf: Vec::new(), secret: true }
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// Number of bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Consumes the writer, returning its bytes.
    pub fn into_bytes(mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Consumes the writer, returning its bytes in a buffer that zeroizes on drop.
    pub fn into_zeroizing(mut self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(std::mem::take(&mut self.buf))
    }

    /// Makes room for `extra` more bytes; a secret writer moves to a larger allocation
    /// itself and zeroizes the old one (`Vec` growth would free it with the bytes in it).
    fn reserve(&mut self, extra: usize) {
        if !self.secret || self.buf.capacity() - self.buf.len() >= extra {
            return;
        }
        let want = self.buf.len().saturating_add(extra).max(self.buf.capacity().saturating_mul(2)).max(256);
        let mut next = Vec::with_capacity(want);
        next.extend_from_slice(&self.buf);
        self.buf.zeroize();
        self.buf = next;
    }

    /// A single byte.
    pub fn u8(&mut self, v: u8) {
        self.reserve(1);
        self.buf.push(v);
    }

    /// A minimal LEB128 varint.
    pub fn var(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.u8(byte);
                return;
            }
            self.u8(byte | 0x80);
        }
    }

    /// Fixed-length bytes, written as they are.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// `opaque`: a varint length, then the bytes.
    pub fn opaque(&mut self, bytes: &[u8]) {
        self.var(bytes.len() as u64);
        self.raw(bytes);
    }

    /// `opt<T>`: flag 0, or flag 1 followed by the value.
    pub fn opt<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                f(self, x);
            }
        }
    }

    /// `list<T>`: a varint count, then the items.
    pub fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.var(items.len() as u64);
        for it in items {
            f(self, it);
        }
    }
}

/// Reads encoded values from a byte slice, with bounds checks on every read.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data`; refuses inputs over [`MAX_MESSAGE_SIZE`].
    pub fn new(data: &'a [u8]) -> Result<Self, DecodeError> {
        Self::with_max_size(data, MAX_MESSAGE_SIZE)
    }

    /// A reader over `data`; refuses inputs over `max` bytes (a state snapshot has its
    /// own bound, [`crate::consts::MAX_SNAPSHOT_SIZE`]).
    pub fn with_max_size(data: &'a [u8], max: usize) -> Result<Self, DecodeError> {
        if data.len() > max {
            return Err(DecodeError::TooLarge { size: data.len(), max });
        }
        Ok(Reader { data, pos: 0 })
    }

    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Fails unless every byte has been consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { offset: self.pos, needed: n });
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// All remaining bytes.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.data[self.pos..];
        self.pos = self.data.len();
        s
    }

    /// A single byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// A fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A minimal LEB128 varint of at most 64 bits.
    pub fn var(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(DecodeError::BadVarint(start));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                // A final zero byte after the first is a non-minimal encoding.
                if i > 0 && b == 0 {
                    return Err(DecodeError::BadVarint(start));
                }
                return Ok(v);
            }
        }
        Err(DecodeError::BadVarint(start))
    }

    /// A varint that must fit in a `u32`.
    pub fn var_u32(&mut self) -> Result<u32, DecodeError> {
        let v = self.var()?;
        u32::try_from(v).map_err(|_| DecodeError::InvalidField("value exceeds 32 bits"))
    }

    /// `opaque`: a varint length, then that many bytes (borrowed, never copied).
    pub fn opaque(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.var()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated { offset: self.pos, needed: usize::MAX })?;
        self.take(len)
    }

    /// An `opt` flag: `false` for 0, `true` for 1, an error otherwise.
    pub fn flag(&mut self) -> Result<bool, DecodeError> {
        let offset = self.pos;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            flag => Err(DecodeError::BadFlag { offset, flag }),
        }
    }

    /// `opt<T>`.
    pub fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, DecodeError>) -> Result<Option<T>, DecodeError> {
        if self.flag()? { Ok(Some(f(self)?)) } else { Ok(None) }
    }

    /// `list<T>` whose items are each at least `min_item_len` bytes long; the count is
    /// checked against [`MAX_LIST_LEN`] and against what the input can hold before anything
    /// is allocated.
    pub fn list<T>(
        &mut self,
        min_item_len: usize,
        mut f: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.var()?;
        let fits = self.remaining() / min_item_len.max(1);
        if count > MAX_LIST_LEN as u64 || count > fits as u64 {
            return Err(DecodeError::ListTooLong { count, max: MAX_LIST_LEN.min(fits) });
        }
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            out.push(f(self)?);
        }
        Ok(out)
    }
}

/// A type with a canonical wire encoding.
pub trait Encode {
    /// Appends the encoding to `w`.
    fn encode(&self, w: &mut Writer);

    /// The encoding as a fresh byte vector.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.into_bytes()
    }
}

/// A type that can be decoded from its canonical wire encoding.
pub trait Decode: Sized {
    /// Reads one value.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decodes a complete byte string, rejecting trailing bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes)?;
        let v = Self::decode(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

/// Encodes a sorted set as a list and checks ordering on decode (§0).
pub fn check_sorted_set<T: Ord>(items: &[T]) -> Result<(), DecodeError> {
    if items.windows(2).all(|w| w[0] < w[1]) { Ok(()) } else { Err(DecodeError::NotCanonicalSet) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn varint_known_answers() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (300, &[0xac, 0x02]),
            (u64::MAX, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ];
        for (v, enc) in cases {
            let mut w = Writer::new();
            w.var(*v);
            assert_eq!(w.as_slice(), *enc, "encoding of {v}");
            let mut r = Reader::new(enc).unwrap();
            assert_eq!(r.var().unwrap(), *v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn non_minimal_and_overlong_varints_are_rejected() {
        for bad in [
            &[0x80, 0x00][..],
            &[0x81, 0x80, 0x00],
            &[0xff; 10],
            &[0x80; 11],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        ] {
            let mut r = Reader::new(bad).unwrap();
            assert!(matches!(r.var(), Err(DecodeError::BadVarint(0))), "{bad:?}");
        }
        let mut r = Reader::new(&[0x80]).unwrap();
        assert!(matches!(r.var(), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn flags_lists_and_trailing_bytes() {
        let mut r = Reader::new(&[2]).unwrap();
        assert_eq!(r.flag(), Err(DecodeError::BadFlag { offset: 0, flag: 2 }));
        // A list announcing more items than the input can hold allocates nothing.
        let mut r = Reader::new(&[0xff, 0xff, 0x03]).unwrap();
        assert!(matches!(r.list(1, |r| r.u8()), Err(DecodeError::ListTooLong { .. })));
        let r = Reader::new(&[0, 1]).unwrap();
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(2)));
        assert_eq!(check_sorted_set(&[1, 1]), Err(DecodeError::NotCanonicalSet));
        assert_eq!(check_sorted_set(&[2, 1]), Err(DecodeError::NotCanonicalSet));
        assert_eq!(check_sorted_set(&[1, 2]), Ok(()));
    }

    proptest! {
        #[test]
        fn varint_round_trips(v: u64) {
            let mut w = Writer::new();
            w.var(v);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes).unwrap();
            prop_assert_eq!(r.var().unwrap(), v);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&bytes).unwrap();
            let _ = r.var();
            let _ = r.opaque();
            let _ = r.list(1, |r| r.opaque().map(<[u8]>::to_vec));
            let _ = r.opt(|r| r.array::<16>());
        }
    }
}
