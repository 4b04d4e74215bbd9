//! Incremental Internet checksum updates (RFC 1624): when bytes covered by a checksum
//! change, the checksum is adjusted by the difference instead of being recomputed.

/// The one's-complement difference of the changes made so far.
#[derive(Clone, Copy)]
pub struct Delta(u32);

impl Delta {
    #[inline(always)]
    pub const fn new() -> Self {
        Self(0)
    }

    /// Account for the bytes `old` being replaced by `new` (same even length).
    #[inline(always)]
    pub fn replace<const N: usize>(&mut self, old: &[u8; N], new: &[u8; N]) {
        let mut i = 0;
        while i + 1 < N {
            self.0 += u32::from(!u16::from_be_bytes([old[i], old[i + 1]]));
            self.0 += u32::from(u16::from_be_bytes([new[i], new[i + 1]]));
            i += 2;
        }
    }

    /// The accumulated difference, to pass between functions.
    #[inline(always)]
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// A difference from `raw`.
    #[inline(always)]
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The changes of `self` and of `other` together.
    #[inline(always)]
    pub const fn plus(self, other: Delta) -> Delta {
        Delta(self.0 + other.0)
    }

    /// `check` (network order) adjusted by the difference.
    #[inline(always)]
    pub fn apply(&self, check: [u8; 2]) -> [u8; 2] {
        let mut sum = u32::from(!u16::from_be_bytes(check)) + (self.0 & 0xFFFF) + (self.0 >> 16);
        sum = (sum & 0xFFFF) + (sum >> 16);
        sum = (sum & 0xFFFF) + (sum >> 16);
        (!(sum as u16)).to_be_bytes()
    }
}
