//! Unit tests of `profile`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keylime_agent::evidence::tcg::{EventLog, TPM_ALG_SHA1, TPM_ALG_SHA256};

use super::*;

fn events_of(
    log: &EventLog,
    pcr: u32,
    event_type: u32,
) -> Vec<&keylime_agent::evidence::tcg::Event> {
    log.events
        .iter()
        .filter(|e| e.pcr == pcr && e.event_type == event_type)
        .collect()
}

#[test]
fn a_secure_boot_of_shim_grub_and_linux_in_every_bank_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::in_dir(dir.path()).expect("keys");
    let bytes = boot_log(&[Bank::Sha1, Bank::Sha256], &keys, &Boot::default());
    let log = EventLog::parse(&bytes).expect("parses");
    assert_eq!(log.banks, [(TPM_ALG_SHA1, 20), (TPM_ALG_SHA256, 32)]);
    assert!(log.events.iter().all(|e| e.digests.len() == 2));
    // PCRs 0-9 and 14, as firmware, shim and GRUB leave them.
    assert_eq!(log.covered_pcrs(), 0x3ff | 1 << 14);
    assert_eq!(events_of(&log, 0, EV_S_CRTM_VERSION).len(), 1);
    assert_eq!(
        events_of(&log, 4, EV_EFI_BOOT_SERVICES_APPLICATION).len(),
        3
    );
    for pcr in 0..8 {
        let separators = events_of(&log, pcr, EV_SEPARATOR);
        assert_eq!(separators.len(), 1, "PCR {pcr}");
        assert_eq!(separators[0].data, [0, 0, 0, 0]);
    }
    let names: Vec<Vec<u8>> = events_of(&log, 7, EV_EFI_VARIABLE_DRIVER_CONFIG)
        .iter()
        .map(|e| e.data.clone())
        .collect();
    for name in ["SecureBoot", "PK", "KEK", "db", "dbx"] {
        assert!(
            names.iter().any(|d| d[32..].starts_with(&utf16(name))),
            "{name} measured"
        );
    }
    // The SecureBoot variable is on, and its digest is over the whole
    // UEFI_VARIABLE_DATA.
    let secure_boot = &events_of(&log, 7, EV_EFI_VARIABLE_DRIVER_CONFIG)[0];
    assert_eq!(secure_boot.data.last(), Some(&1));
    assert_eq!(
        secure_boot.digest(TPM_ALG_SHA256).unwrap(),
        openssl::sha::sha256(&secure_boot.data)
    );
    let cmdline = events_of(&log, 8, EV_IPL)
        .into_iter()
        .find(|e| e.data.starts_with(b"kernel_cmdline: "))
        .expect("kernel command line");
    assert_eq!(cmdline.data.last(), Some(&0), "NUL-terminated");
    assert_eq!(
        cmdline.digest(TPM_ALG_SHA256).unwrap(),
        openssl::sha::sha256(&cmdline.data[16..cmdline.data.len() - 1])
    );
}

#[test]
fn the_same_options_give_the_same_log_and_a_change_touches_only_its_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Keys::in_dir(dir.path()).expect("keys");
    let again = Keys::in_dir(dir.path()).expect("keys reused");
    let base = boot_log(&[Bank::Sha256], &keys, &Boot::default());
    assert_eq!(base, boot_log(&[Bank::Sha256], &again, &Boot::default()));
    let base = EventLog::parse(&base).unwrap();

    let rebuilt = Boot {
        kernel_build: 2,
        ..Boot::default()
    };
    let rebuilt = EventLog::parse(&boot_log(&[Bank::Sha256], &keys, &rebuilt)).unwrap();
    assert_eq!(rebuilt.events.len(), base.events.len());
    let changed: Vec<(u32, u32)> = base
        .events
        .iter()
        .zip(&rebuilt.events)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| (a.pcr, a.event_type))
        .collect();
    // The kernel file and image, and the initrd.
    assert_eq!(
        changed,
        [
            (9, EV_IPL),
            (4, EV_EFI_BOOT_SERVICES_APPLICATION),
            (9, EV_IPL)
        ]
    );

    let off = Boot {
        secure_boot: false,
        ..Boot::default()
    };
    let off = EventLog::parse(&boot_log(&[Bank::Sha256], &keys, &off)).unwrap();
    assert_eq!(
        events_of(&off, 7, EV_EFI_VARIABLE_DRIVER_CONFIG)[0]
            .data
            .last(),
        Some(&0)
    );
    assert!(
        events_of(&off, 7, EV_EFI_VARIABLE_AUTHORITY).is_empty(),
        "nothing verified images"
    );
    assert_eq!(events_of(&base, 7, EV_EFI_VARIABLE_AUTHORITY).len(), 3);
}
