//! How the capture filter is registered.
//!
//! Its categories, the reference string its factory is created with, and the
//! names and hardware id the INF uses. The INF (`inf/avscap.inx`) must agree
//! with these, which `tests/inf_consistency.rs` checks: a reference string that
//! differs from the factory's gives an interface that opens nothing.

use super::guid::{Guid, KSCATEGORY_CAPTURE, KSCATEGORY_VIDEO, KSCATEGORY_VIDEO_CAMERA};

/// The filter's categories: capture and video (DirectShow's "WDM Streaming
/// Capture Devices", GraphEdit), video camera (the Camera app, Frame Server).
pub const FILTER_CATEGORIES: [Guid; 3] = [
    KSCATEGORY_CAPTURE,
    KSCATEGORY_VIDEO,
    KSCATEGORY_VIDEO_CAMERA,
];

/// The reference string passed to `KsCreateFilterFactory`; each INF
/// `AddInterface` line names the same.
pub const FILTER_REFERENCE_STRING: &str = "GLOBAL";

// One UTF-16 code unit per byte holds only for ASCII.
const _: () = assert!(FILTER_REFERENCE_STRING.is_ascii());

/// Length of [`FILTER_REFERENCE_STRING`] as UTF-16 with its terminating NUL.
pub const FILTER_REFERENCE_STRING_UTF16_LEN: usize = FILTER_REFERENCE_STRING.len() + 1;

/// [`FILTER_REFERENCE_STRING`] as the NUL-terminated UTF-16 a `PWSTR` wants
/// (the string is ASCII, so each byte is one code unit).
#[must_use]
pub const fn filter_reference_string_utf16() -> [u16; FILTER_REFERENCE_STRING_UTF16_LEN] {
    let bytes = FILTER_REFERENCE_STRING.as_bytes();
    let mut out = [0u16; FILTER_REFERENCE_STRING_UTF16_LEN];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

/// The root-enumerated device's hardware id (INF models section, install
/// command).
pub const HARDWARE_ID: &str = "Root\\AvsCap";

/// The interface friendly name: what GraphEdit and the Camera app show.
pub const FRIENDLY_NAME: &str = "avscap Source";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_string_is_nul_terminated_utf16() {
        let w = filter_reference_string_utf16();
        assert_eq!(w, [71, 76, 79, 66, 65, 76, 0]);
    }
}
