//! NTSTATUS values the core's errors map to.
//!
//! The core does not depend on wdk-sys, so the few values it hands back are
//! spelled here as the `i32` bit patterns ntstatus.h gives them. The kernel
//! shell returns them unchanged.

/// An NTSTATUS value (a signed 32-bit code; negative means failure).
pub type NtStatus = i32;

/// Bit pattern of an NTSTATUS written as the unsigned hex that ntstatus.h uses.
#[allow(clippy::cast_possible_wrap)]
const fn nt(code: u32) -> NtStatus {
    code as i32
}

/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: NtStatus = 0;
/// `STATUS_PENDING`.
pub const STATUS_PENDING: NtStatus = 0x0000_0103;
/// `STATUS_BUFFER_OVERFLOW` (a warning: the size query of an intersect handler).
pub const STATUS_BUFFER_OVERFLOW: NtStatus = nt(0x8000_0005);
/// `STATUS_INVALID_PARAMETER`.
pub const STATUS_INVALID_PARAMETER: NtStatus = nt(0xC000_000D);
/// `STATUS_BUFFER_TOO_SMALL`.
pub const STATUS_BUFFER_TOO_SMALL: NtStatus = nt(0xC000_0023);
/// `STATUS_INTEGER_OVERFLOW`.
pub const STATUS_INTEGER_OVERFLOW: NtStatus = nt(0xC000_0095);
/// `STATUS_INSUFFICIENT_RESOURCES`.
pub const STATUS_INSUFFICIENT_RESOURCES: NtStatus = nt(0xC000_009A);
/// `STATUS_NOT_SUPPORTED`.
pub const STATUS_NOT_SUPPORTED: NtStatus = nt(0xC000_00BB);
/// `STATUS_INVALID_DEVICE_STATE`.
pub const STATUS_INVALID_DEVICE_STATE: NtStatus = nt(0xC000_0184);
/// `STATUS_NO_MATCH`.
pub const STATUS_NO_MATCH: NtStatus = nt(0xC000_0272);

/// `NT_SUCCESS`: true for success and informational codes.
#[must_use]
pub const fn nt_success(status: NtStatus) -> bool {
    status >= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::cast_sign_loss)]
    fn codes_match_ntstatus_h() {
        assert_eq!(STATUS_INVALID_PARAMETER as u32, 0xC000_000D);
        assert_eq!(STATUS_INSUFFICIENT_RESOURCES as u32, 0xC000_009A);
        assert_eq!(STATUS_NOT_SUPPORTED as u32, 0xC000_00BB);
        assert_eq!(STATUS_NO_MATCH as u32, 0xC000_0272);
        assert!(nt_success(STATUS_PENDING));
        assert!(!nt_success(STATUS_BUFFER_OVERFLOW) || STATUS_BUFFER_OVERFLOW < 0);
        assert!(!nt_success(STATUS_NO_MATCH));
    }
}
