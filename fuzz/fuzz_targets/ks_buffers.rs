//! The KS request buffers a client hands the pin, as raw bytes, through
//! the very readers the kernel shell calls (`portable::ks_buffers`): a data
//! format, a data range and an allocator framing. Checked against a model
//! that reads the WDK layouts here, byte by byte: what is accepted, every
//! field read, that nothing past `FormatSize` matters, and that what the
//! validator and the intersection then decide is an offered format.
#![no_main]

use avscap::portable::ks_buffers::{read_allocator_framing, read_data_format, read_data_range};
use avscap::portable::video_format::{intersect_any, validate_format, FormatError, DATA_RANGES};
use libfuzzer_sys::fuzz_target;

// ---------------------------------------------------------------- model ----

/// Little-endian integer of `n` bytes at `at` (the caller checked the
/// length).
fn le(b: &[u8], at: usize, n: usize) -> u64 {
    (0..n)
        .rev()
        .fold(0u64, |v, i| (v << 8) | u64::from(b[at + i]))
}

/// `KSDATAFORMAT.FormatSize` when the header is there and honest about the
/// bytes: at least the header, at most what was sent.
fn model_format_size(b: &[u8]) -> Option<usize> {
    if b.len() < 4 {
        return None;
    }
    let size = le(b, 0, 4) as usize;
    (64..=b.len()).contains(&size).then_some(size)
}

fn guid_bytes(g: avscap::portable::guid::Guid) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&g.data1.to_le_bytes());
    out[4..6].copy_from_slice(&g.data2.to_le_bytes());
    out[6..8].copy_from_slice(&g.data3.to_le_bytes());
    out[8..].copy_from_slice(&g.data4);
    out
}

/// `KSDATAFORMAT_SPECIFIER_VIDEOINFO`, written out from the KS headers.
const VIDEOINFO: [u8; 16] = [
    0x80, 0x9F, 0x58, 0x05, 0x56, 0xC3, 0xCE, 0x11, 0xBF, 0x01, 0x00, 0xAA, 0x00, 0x55, 0x59, 0x5A,
];

fn check_format(b: &[u8]) {
    let got = read_data_format(b);
    let Some(size) = model_format_size(b) else {
        assert_eq!(got, Err(FormatError::HeaderTooSmall));
        return;
    };
    let p = got.expect("an honest FormatSize is read");
    assert_eq!(p.format_size as usize, size);
    assert_eq!(u64::from(p.sample_size), le(b, 8, 4));
    assert_eq!(guid_bytes(p.major), b[16..32]);
    assert_eq!(guid_bytes(p.sub), b[32..48]);
    assert_eq!(guid_bytes(p.specifier), b[48..64]);
    if size >= 152 {
        // KS_VIDEOINFOHEADER at 64; its bmiHeader at 64 + 48.
        assert_eq!(u64::from(p.info.bit_rate), le(b, 96, 4));
        assert_eq!(p.info.avg_time_per_frame as u64, le(b, 104, 8));
        assert_eq!(u64::from(p.bi_size), le(b, 112, 4));
        assert_eq!(u64::from(p.info.width.cast_unsigned()), le(b, 116, 4));
        assert_eq!(u64::from(p.info.height.cast_unsigned()), le(b, 120, 4));
        assert_eq!(u64::from(p.info.planes), le(b, 124, 2));
        assert_eq!(u64::from(p.info.bit_count), le(b, 126, 2));
        assert_eq!(u64::from(p.info.compression), le(b, 128, 4));
        assert_eq!(u64::from(p.info.size_image), le(b, 132, 4));
    } else {
        assert_eq!(
            (p.bi_size, p.info.width, p.info.height, p.info.size_image),
            (0, 0, 0, 0)
        );
    }
    // Bytes past FormatSize are never read.
    let mut longer = b[..size].to_vec();
    longer.extend(b[..size].iter().map(|x| !x));
    assert_eq!(read_data_format(&longer), Ok(p));
    // Whatever validates is an offered format, with the client's subtype.
    if let Ok(f) = validate_format(&p) {
        assert!(DATA_RANGES.contains(&f), "{f:?} is not offered");
        assert_eq!(guid_bytes(f.pixel.subtype()), b[32..48]);
    }
}

fn check_range(b: &[u8]) {
    let got = read_data_range(b);
    let Some(size) = model_format_size(b) else {
        assert_eq!(got, Err(FormatError::HeaderTooSmall));
        return;
    };
    let r = got.expect("an honest FormatSize is read");
    let null = [0u8; 16];
    let guid = |at: usize| (b[at..at + 16] != null).then(|| b[at..at + 16].to_vec());
    assert_eq!(r.major.map(|g| guid_bytes(g).to_vec()), guid(16));
    assert_eq!(r.sub.map(|g| guid_bytes(g).to_vec()), guid(32));
    assert_eq!(r.specifier.map(|g| guid_bytes(g).to_vec()), guid(48));
    // The video part: only for the VIDEOINFO specifier and a whole
    // KS_DATARANGE_VIDEO (296 bytes; its KS_VIDEOINFOHEADER at 208).
    match r.video {
        None => assert!(size < 296 || b[48..64] != VIDEOINFO),
        Some(v) => {
            assert!(size >= 296 && b[48..64] == VIDEOINFO);
            assert_eq!(v.min_frame_interval as u64, le(b, 184, 8));
            assert_eq!(v.max_frame_interval as u64, le(b, 192, 8));
            assert_eq!(v.avg_time_per_frame as u64, le(b, 248, 8));
            assert_eq!(u64::from(v.width.cast_unsigned()), le(b, 260, 4));
            assert_eq!(u64::from(v.height.cast_unsigned()), le(b, 264, 4));
            assert_eq!(u64::from(v.bit_count), le(b, 270, 2));
            assert_eq!(u64::from(v.compression), le(b, 272, 4));
        }
    }
    if let Ok(f) = intersect_any(&r) {
        assert!(DATA_RANGES.contains(&f), "{f:?} is not offered");
        assert!(r.accepts(&f), "{f:?} does not satisfy the client's range");
    }
}

fn check_framing(b: &[u8]) {
    let got = read_allocator_framing(b);
    if b.len() < 24 {
        assert_eq!(got, None);
        return;
    }
    let f = got.expect("24 bytes are a framing");
    let fields = [
        f.flags,
        f.pool_type,
        f.frames,
        f.frame_size,
        f.file_alignment,
        f.reserved,
    ];
    for (i, v) in fields.into_iter().enumerate() {
        assert_eq!(u64::from(v), le(b, 4 * i, 4), "field {i}");
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks how much of the input is the client's buffer,
    // so short, exact and long buffers are all reached.
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let b = &rest[..rest.len().min(usize::from(cut) * 2 + 1)];
    check_format(b);
    check_range(b);
    check_framing(b);
    check_format(rest);
    check_range(rest);
});
