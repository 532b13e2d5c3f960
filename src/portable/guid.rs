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

impl core::fmt::Display for Guid {
    /// The registry form, upper case: `{65E8773D-8F56-11D0-A3B9-00A0C9223196}`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{{{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}}}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
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

/// `KSCATEGORY_CAPTURE` {65E8773D-8F56-11D0-A3B9-00A0C9223196}.
pub const KSCATEGORY_CAPTURE: Guid = Guid::new(
    0x65E8_773D,
    0x8F56,
    0x11D0,
    [0xA3, 0xB9, 0x00, 0xA0, 0xC9, 0x22, 0x31, 0x96],
);
/// `KSCATEGORY_VIDEO` {6994AD05-93EF-11D0-A3CC-00A0C9223196}.
pub const KSCATEGORY_VIDEO: Guid = Guid::new(
    0x6994_AD05,
    0x93EF,
    0x11D0,
    [0xA3, 0xCC, 0x00, 0xA0, 0xC9, 0x22, 0x31, 0x96],
);
/// `KSCATEGORY_VIDEO_CAMERA` {E5323777-F976-4F5B-9B55-B94699C46E44}.
pub const KSCATEGORY_VIDEO_CAMERA: Guid = Guid::new(
    0xE532_3777,
    0xF976,
    0x4F5B,
    [0x9B, 0x55, 0xB9, 0x46, 0x99, 0xC4, 0x6E, 0x44],
);
/// `PIN_CATEGORY_CAPTURE` = `PINNAME_VIDEO_CAPTURE` {FB6C4281-0353-11D1-905F-0000C0CC16BA}.
pub const PIN_CATEGORY_CAPTURE: Guid = Guid::new(
    0xFB6C_4281,
    0x0353,
    0x11D1,
    [0x90, 0x5F, 0x00, 0x00, 0xC0, 0xCC, 0x16, 0xBA],
);
/// `KSNAME_Filter` {9B365890-165F-11D0-A195-0020AFD156E4}: the filter
/// descriptor's reference GUID.
pub const KSNAME_FILTER: Guid = Guid::new(
    0x9B36_5890,
    0x165F,
    0x11D0,
    [0xA1, 0x95, 0x00, 0x20, 0xAF, 0xD1, 0x56, 0xE4],
);
/// `PROPSETID_VIDCAP_DROPPEDFRAMES` {C6E13344-30AC-11D0-A18C-00A0C9118956}.
pub const PROPSETID_VIDCAP_DROPPEDFRAMES: Guid = Guid::new(
    0xC6E1_3344,
    0x30AC,
    0x11D0,
    [0xA1, 0x8C, 0x00, 0xA0, 0xC9, 0x11, 0x89, 0x56],
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
        assert_eq!(
            std::format!("{KSCATEGORY_VIDEO_CAMERA}"),
            "{E5323777-F976-4F5B-9B55-B94699C46E44}"
        );
        assert_eq!(
            std::format!("{MEDIASUBTYPE_RGB24}"),
            "{E436EB7D-524F-11CE-9F53-0020AF0BA770}"
        );
    }
}
