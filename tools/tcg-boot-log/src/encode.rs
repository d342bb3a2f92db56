//! Byte layouts of the TCG PC Client Platform Firmware Profile and the UEFI
//! specification that a boot log carries: the log framing (Spec ID event,
//! `TCG_PCR_EVENT2`) and the event data structures firmware, shim and GRUB
//! write (`UEFI_VARIABLE_DATA`, `EFI_SIGNATURE_LIST`,
//! `UEFI_IMAGE_LOAD_EVENT`, `UEFI_GPT_DATA`, `UEFI_PLATFORM_FIRMWARE_BLOB`).

use keylime_agent::evidence::tcg::{
    EV_NO_ACTION, SPEC_ID_SIGNATURE, TPM_ALG_SHA1, TPM_ALG_SHA256, TPM_ALG_SHA384, TPM_ALG_SHA512,
};

/// An EFI GUID by its fields, e.g. `8be4df61-93ca-11d2-aa0d-00e098032b8c`
/// is `Guid(0x8be4df61, 0x93ca, 0x11d2, [0xaa, 0x0d, 0x00, 0xe0, ...])`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid(pub u32, pub u16, pub u16, pub [u8; 8]);

/// `EFI_GLOBAL_VARIABLE`: `SecureBoot`, `PK`, `KEK`, `BootOrder`, `Boot####`.
pub const EFI_GLOBAL_VARIABLE: Guid = Guid(
    0x8be4df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// `EFI_IMAGE_SECURITY_DATABASE_GUID`: `db`, `dbx`.
pub const EFI_IMAGE_SECURITY_DATABASE: Guid = Guid(
    0xd719b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);
/// `EFI_CERT_X509_GUID`: a signature list of X.509 certificates.
pub const EFI_CERT_X509: Guid = Guid(
    0xa5c059a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// `EFI_CERT_SHA256_GUID`: a signature list of SHA-256 image digests.
pub const EFI_CERT_SHA256: Guid = Guid(
    0xc1c41626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);
/// shim's vendor GUID (`MokList`, `SbatLevel`, and its own entries).
pub const SHIM_LOCK: Guid = Guid(
    0x605dab50,
    0xe046,
    0x4300,
    [0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23],
);

impl Guid {
    /// The 16 bytes as EFI stores them: the first three fields little
    /// endian, the last two as written.
    pub fn bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&self.0.to_le_bytes());
        out[4..6].copy_from_slice(&self.1.to_le_bytes());
        out[6..8].copy_from_slice(&self.2.to_le_bytes());
        out[8..].copy_from_slice(&self.3);
        out
    }
}

/// UTF-16LE of `s`, without a terminator.
pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// `UEFI_VARIABLE_DATA`: the measured form of an EFI variable.
pub fn variable_data(guid: Guid, name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = guid.bytes().to_vec();
    out.extend_from_slice(&(name.encode_utf16().count() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&utf16(name));
    out.extend_from_slice(data);
    out
}

/// `EFI_SIGNATURE_DATA`: an owner GUID and the signature (a certificate or
/// a digest).
pub fn signature_data(owner: Guid, data: &[u8]) -> Vec<u8> {
    let mut out = owner.bytes().to_vec();
    out.extend_from_slice(data);
    out
}

/// `EFI_SIGNATURE_LIST` of one type; every entry is (owner, data) of one
/// size, as UEFI requires of a list.
pub fn signature_list(kind: Guid, entries: &[(Guid, Vec<u8>)]) -> Vec<u8> {
    let size = entries.first().map_or(16, |(_, d)| 16 + d.len());
    assert!(
        entries.iter().all(|(_, d)| 16 + d.len() == size),
        "one signature size per list"
    );
    let total = 28 + size * entries.len();
    let mut out = kind.bytes().to_vec();
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // SignatureHeaderSize
    out.extend_from_slice(&(size as u32).to_le_bytes());
    for (owner, data) in entries {
        out.extend_from_slice(&signature_data(*owner, data));
    }
    out
}

/// One node of an EFI device path.
pub fn device_path_node(kind: u8, sub: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind, sub];
    out.extend_from_slice(&((4 + body.len()) as u16).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The device path of a file on a GPT partition of an NVMe-less virtual
/// disk: `PciRoot(0x0)/Pci(0x1,0x1)/HD(1,GPT,<guid>,0x800,0x100000)/\path`,
/// ended by the end-of-path node.
pub fn file_device_path(partition: Guid, path: &str) -> Vec<u8> {
    let mut acpi = 0x0a03_41d0u32.to_le_bytes().to_vec(); // PNP0A03
    acpi.extend_from_slice(&0u32.to_le_bytes());
    let mut hd = 1u32.to_le_bytes().to_vec(); // partition number
    hd.extend_from_slice(&0x800u64.to_le_bytes()); // start LBA
    hd.extend_from_slice(&0x10_0000u64.to_le_bytes()); // size in LBAs
    hd.extend_from_slice(&partition.bytes());
    hd.extend_from_slice(&[0x02, 0x02]); // GPT, GUID signature
    let mut file = utf16(path);
    file.extend_from_slice(&[0, 0]);
    [
        device_path_node(0x02, 0x01, &acpi),
        device_path_node(0x01, 0x01, &[0x01, 0x01]), // PCI function 1, device 1
        device_path_node(0x04, 0x01, &hd),
        device_path_node(0x04, 0x04, &file),
        device_path_node(0x7f, 0xff, &[]),
    ]
    .concat()
}

/// `UEFI_IMAGE_LOAD_EVENT` for an image loaded at `base`.
pub fn image_load_event(base: u64, length: u64, device_path: &[u8]) -> Vec<u8> {
    let mut out = base.to_le_bytes().to_vec();
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // link-time address
    out.extend_from_slice(&(device_path.len() as u64).to_le_bytes());
    out.extend_from_slice(device_path);
    out
}

/// `UEFI_PLATFORM_FIRMWARE_BLOB`: where a measured firmware volume lies.
pub fn firmware_blob(base: u64, length: u64) -> Vec<u8> {
    let mut out = base.to_le_bytes().to_vec();
    out.extend_from_slice(&length.to_le_bytes());
    out
}

/// `UEFI_GPT_DATA`: the GPT header and its partition entries.
pub fn gpt_data(disk: Guid, partitions: &[(Guid, Guid, &str)]) -> Vec<u8> {
    let mut header = b"EFI PART".to_vec();
    header.extend_from_slice(&0x0001_0000u32.to_le_bytes()); // revision 1.0
    header.extend_from_slice(&92u32.to_le_bytes()); // header size
    header.extend_from_slice(&0u32.to_le_bytes()); // header CRC (not checked)
    header.extend_from_slice(&0u32.to_le_bytes()); // reserved
    header.extend_from_slice(&1u64.to_le_bytes()); // my LBA
    header.extend_from_slice(&0x3f_ffffu64.to_le_bytes()); // alternate LBA
    header.extend_from_slice(&34u64.to_le_bytes()); // first usable LBA
    header.extend_from_slice(&0x3f_ffdeu64.to_le_bytes()); // last usable LBA
    header.extend_from_slice(&disk.bytes());
    header.extend_from_slice(&2u64.to_le_bytes()); // partition entries LBA
    header.extend_from_slice(&(partitions.len() as u32).to_le_bytes());
    header.extend_from_slice(&128u32.to_le_bytes()); // entry size
    header.extend_from_slice(&0u32.to_le_bytes()); // entries CRC
    let mut out = header;
    out.extend_from_slice(&(partitions.len() as u64).to_le_bytes());
    for (i, (kind, unique, name)) in partitions.iter().enumerate() {
        let first = 0x800 + (i as u64) * 0x10_0000;
        out.extend_from_slice(&kind.bytes());
        out.extend_from_slice(&unique.bytes());
        out.extend_from_slice(&first.to_le_bytes());
        out.extend_from_slice(&(first + 0xf_ffff).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // attributes
        let mut label = utf16(name);
        label.resize(72, 0);
        out.extend_from_slice(&label);
    }
    out
}

/// A bank the writer can hash: its TPM_ALG_ID and digest size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bank {
    /// SHA-1 (a second bank on older platforms).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Bank {
    /// `sha1`, `sha256`, `sha384` or `sha512`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "sha1" => Self::Sha1,
            "sha256" => Self::Sha256,
            "sha384" => Self::Sha384,
            "sha512" => Self::Sha512,
            _ => return None,
        })
    }

    fn id_and_size(self) -> (u16, u16) {
        match self {
            Self::Sha1 => (TPM_ALG_SHA1, 20),
            Self::Sha256 => (TPM_ALG_SHA256, 32),
            Self::Sha384 => (TPM_ALG_SHA384, 48),
            Self::Sha512 => (TPM_ALG_SHA512, 64),
        }
    }

    fn digest(self, content: &[u8]) -> Vec<u8> {
        use openssl::sha;
        match self {
            Self::Sha1 => sha::sha1(content).to_vec(),
            Self::Sha256 => sha::sha256(content).to_vec(),
            Self::Sha384 => sha::sha384(content).to_vec(),
            Self::Sha512 => sha::sha512(content).to_vec(),
        }
    }
}

/// A log being written: the Spec ID event for `banks`, then events with
/// one digest per bank.
pub struct LogWriter {
    banks: Vec<Bank>,
    bytes: Vec<u8>,
}

impl LogWriter {
    /// Starts a log for `banks`.
    pub fn new(banks: &[Bank]) -> Self {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
        spec.extend_from_slice(&[0, 2, 0, 2]); // 2.0, errata 0, UINTN 64-bit
        spec.extend_from_slice(&(banks.len() as u32).to_le_bytes());
        for (alg, size) in banks.iter().map(|b| b.id_and_size()) {
            spec.extend_from_slice(&alg.to_le_bytes());
            spec.extend_from_slice(&size.to_le_bytes());
        }
        spec.push(0); // vendorInfoSize
        let mut bytes = 0u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        bytes.extend_from_slice(&[0; 20]);
        bytes.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&spec);
        Self {
            banks: banks.to_vec(),
            bytes,
        }
    }

    /// The digest of `content` in every bank.
    pub fn digests_of(&self, content: &[u8]) -> Vec<(u16, Vec<u8>)> {
        self.banks
            .iter()
            .map(|bank| (bank.id_and_size().0, bank.digest(content)))
            .collect()
    }

    /// Appends an event whose digests are given.
    pub fn event(&mut self, pcr: u32, event_type: u32, digests: &[(u16, Vec<u8>)], data: &[u8]) {
        self.bytes.extend_from_slice(&pcr.to_le_bytes());
        self.bytes.extend_from_slice(&event_type.to_le_bytes());
        self.bytes
            .extend_from_slice(&(digests.len() as u32).to_le_bytes());
        for (alg, digest) in digests {
            self.bytes.extend_from_slice(&alg.to_le_bytes());
            self.bytes.extend_from_slice(digest);
        }
        self.bytes
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(data);
    }

    /// Appends an event whose digest is that of its own data.
    pub fn measured(&mut self, pcr: u32, event_type: u32, data: &[u8]) {
        let digests = self.digests_of(data);
        self.event(pcr, event_type, &digests, data);
    }

    /// The log.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}
