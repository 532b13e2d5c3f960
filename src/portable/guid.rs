//! GUIDs the core reasons about (media types, memory types), in a portable
//! form the kernel shell converts to the WDK's `GUID` field by field.

/// A GUID with the same fields, in the same order, as the Windows `GUID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid {
    /// `Data1`.
    pub data1: u32,
    /// `Data2`.
    pub data2: u16,
    /// `Data3`.
    pub data3: u16,
    /// `Data4`.
    pub data4: [u8; 8],
}

impl Guid {
    /// Builds a GUID from its registry-format parts.
    #[must_use]
    pub const fn new(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        Self {
            data1,
            data2,
            data3,
            data4,
        }
    }

    /// The GUID of a DirectShow/KS media subtype whose `Data1` is a FourCC
    /// (`XXXXXXXX-0000-0010-8000-00AA00389B71`).
    #[must_use]
    pub const fn from_fourcc(fourcc: u32) -> Self {
        Self::new(
            fourcc,
            0x0000,
            0x0010,
            [0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71],
        )
    }

    /// True for `GUID_NULL`, which KS uses as the wildcard.
    #[must_use]
    pub const fn is_null(&self) -> bool {
        self.data1 == 0 && self.data2 == 0 && self.data3 == 0 && u64::from_ne_bytes(self.data4) == 0
    }
}

/// `GUID_NULL`.
pub const GUID_NULL: Guid = Guid::new(0, 0, 0, [0; 8]);

/// `KSDATAFORMAT_TYPE_VIDEO` {73646976-0000-0010-8000-00AA00389B71}.
pub const KSDATAFORMAT_TYPE_VIDEO: Guid = Guid::from_fourcc(0x7364_6976);
/// `KSDATAFORMAT_TYPE_WILDCARD` = `GUID_NULL`.
pub const KSDATAFORMAT_TYPE_WILDCARD: Guid = GUID_NULL;
/// `KSDATAFORMAT_SUBTYPE_WILDCARD` = `GUID_NULL`.
pub const KSDATAFORMAT_SUBTYPE_WILDCARD: Guid = GUID_NULL;
/// `KSDATAFORMAT_SPECIFIER_WILDCARD` = `GUID_NULL`.
pub const KSDATAFORMAT_SPECIFIER_WILDCARD: Guid = GUID_NULL;
/// `MEDIASUBTYPE_YUY2` {32595559-0000-0010-8000-00AA00389B71}.
pub const MEDIASUBTYPE_YUY2: Guid = Guid::from_fourcc(0x3259_5559);
/// `MEDIASUBTYPE_NV12` {3231564E-0000-0010-8000-00AA00389B71}.
pub const MEDIASUBTYPE_NV12: Guid = Guid::from_fourcc(0x3231_564E);
/// `MEDIASUBTYPE_RGB24` {E436EB7D-524F-11CE-9F53-0020AF0BA770}.
pub const MEDIASUBTYPE_RGB24: Guid = Guid::new(
    0xE436_EB7D,
    0x524F,
    0x11CE,
    [0x9F, 0x53, 0x00, 0x20, 0xAF, 0x0B, 0xA7, 0x70],
);
/// `KSDATAFORMAT_SPECIFIER_VIDEOINFO` {05589F80-C356-11CE-BF01-00AA0055595A}.
pub const KSDATAFORMAT_SPECIFIER_VIDEOINFO: Guid = Guid::new(
    0x0558_9F80,
    0xC356,
    0x11CE,
    [0xBF, 0x01, 0x00, 0xAA, 0x00, 0x55, 0x59, 0x5A],
);
/// `KSMEMORY_TYPE_KERNEL_NONPAGED` {4A6D5FC4-7895-11D1-B069-00A0C9062802}.
pub const KSMEMORY_TYPE_KERNEL_NONPAGED: Guid = Guid::new(
    0x4A6D_5FC4,
    0x7895,
    0x11D1,
    [0xB0, 0x69, 0x00, 0xA0, 0xC9, 0x06, 0x28, 0x02],
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fourcc_subtypes_spell_their_fourcc() {
        // 'YUY2' little-endian is 0x32595559; 'NV12' is 0x3231564E.
        assert_eq!(MEDIASUBTYPE_YUY2.data1.to_le_bytes(), *b"YUY2");
        assert_eq!(MEDIASUBTYPE_NV12.data1.to_le_bytes(), *b"NV12");
        assert_eq!(KSDATAFORMAT_TYPE_VIDEO.data1.to_le_bytes(), *b"vids");
        assert!(GUID_NULL.is_null());
        assert!(!MEDIASUBTYPE_RGB24.is_null());
    }
}
