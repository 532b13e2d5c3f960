//! The INF template agrees with the driver: one `AddInterface` per filter
//! category, each with the factory's reference string, the category GUIDs
//! spelled as the driver registers them, the hardware id and friendly name,
//! and the README's install command naming the same hardware id.

use avscap::portable::filter_identity::{
    FILTER_CATEGORIES, FILTER_REFERENCE_STRING, FRIENDLY_NAME, HARDWARE_ID,
};
use avscap::portable::guid::{KSCATEGORY_CAPTURE, KSCATEGORY_VIDEO, KSCATEGORY_VIDEO_CAMERA};
use std::collections::BTreeMap;

fn inx() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/inf/avscap.inx")).unwrap()
}

/// `name = "value"` lines of the [Strings] section.
fn strings(text: &str) -> BTreeMap<String, String> {
    let mut in_strings = false;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_strings = line.eq_ignore_ascii_case("[Strings]");
            continue;
        }
        if let (true, Some((k, v))) = (in_strings, line.split_once('=')) {
            out.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
        }
    }
    out
}

#[test]
fn interfaces_match_the_filter_categories_and_reference_string() {
    let text = inx();
    let strings = strings(&text);
    let add_interfaces: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("AddInterface"))
        .map(|rest| {
            let fields: Vec<&str> = rest
                .trim_start_matches([' ', '='])
                .split(',')
                .map(str::trim)
                .collect();
            let category = strings[fields[0].trim_matches('%')].clone();
            (category, fields[1].trim_matches('"').to_string())
        })
        .collect();
    let mut registered: Vec<String> = add_interfaces
        .iter()
        .map(|(c, _)| c.to_uppercase())
        .collect();
    let mut expected: Vec<String> = FILTER_CATEGORIES.iter().map(ToString::to_string).collect();
    registered.sort();
    expected.sort();
    assert_eq!(registered, expected, "one AddInterface per filter category");
    for (category, reference) in &add_interfaces {
        assert_eq!(
            reference, FILTER_REFERENCE_STRING,
            "reference string of {category}"
        );
    }
    assert_eq!(
        strings["KSCATEGORY_CAPTURE"].to_uppercase(),
        KSCATEGORY_CAPTURE.to_string()
    );
    assert_eq!(
        strings["KSCATEGORY_VIDEO"].to_uppercase(),
        KSCATEGORY_VIDEO.to_string()
    );
    assert_eq!(
        strings["KSCATEGORY_VIDEO_CAMERA"].to_uppercase(),
        KSCATEGORY_VIDEO_CAMERA.to_string()
    );
}

#[test]
fn names_class_and_hardware_id_are_the_drivers() {
    let text = inx();
    let strings = strings(&text);
    assert_eq!(strings["AvsCap.FriendlyName"], FRIENDLY_NAME);
    assert!(text
        .lines()
        .any(|l| l.contains("%AvsCap.DeviceDesc%") && l.trim_end().ends_with(HARDWARE_ID)));
    assert!(text.lines().any(|l| l.replace(' ', "") == "Class=Camera"));
    assert!(text.contains("ServiceBinary = %13%\\avscap.sys"));
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let escaped = HARDWARE_ID.replace('\\', "\\\\");
    assert!(
        readme.contains(&format!("devgen /add /hardwareid \"{escaped}\""))
            || readme.contains(&format!("devgen /add /hardwareid \"{HARDWARE_ID}\"")),
        "the README's install command names the INF's hardware id"
    );
}

/// The oldest Windows build that exports each kernel routine the driver
/// imports and that some supported build lacks (everything else it imports
/// is at least as old as Windows 10's first release).
const NEWER_IMPORTS: [(&str, u32); 1] = [
    // ExAllocatePool2 (wdk-alloc and the driver's contexts): Windows 10,
    // version 2004.
    ("ntoskrnl.exe!ExAllocatePool2", 19041),
];

#[test]
fn the_inf_installs_only_on_builds_that_export_every_import() {
    let imports = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/expected-imports.txt"
    ))
    .unwrap();
    let needed = NEWER_IMPORTS
        .iter()
        .filter(|(name, _)| imports.lines().any(|l| l.trim().eq_ignore_ascii_case(name)))
        .map(|&(_, build)| build)
        .max()
        .unwrap_or(0);
    assert!(needed >= 19041, "the import list names ExAllocatePool2");
    // Every models decoration (`NT$ARCH$.10.0...<build>`) names its lowest
    // build; a driver installed below `needed` would fail to load (Code 39).
    let text = inx();
    let builds: Vec<u32> = text
        .match_indices("NT$ARCH$.10.0...")
        .map(|(at, m)| {
            let digits: String = text[at + m.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().unwrap()
        })
        .collect();
    assert_eq!(builds.len(), 2, "[Manufacturer] and its models section");
    for build in builds {
        assert!(
            build >= needed,
            "the INF installs on build {build}, but the driver imports routines from build {needed}"
        );
    }
}
