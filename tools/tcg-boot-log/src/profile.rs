//! The boot a log describes: UEFI firmware with Secure Boot, shim, GRUB and
//! a Linux kernel, measured the way the TCG PC Client Platform Firmware
//! Profile, shim and GRUB measure them. Every "file" (firmware volumes,
//! the EFI binaries, the kernel and initrd) is deterministic content named
//! by a label, so that two logs made with the same options are identical
//! and a changed option changes exactly the events it names.

use super::encode::{
    file_device_path, firmware_blob, gpt_data, image_load_event, signature_data, signature_list,
    utf16, variable_data, Bank, Guid, LogWriter, EFI_CERT_SHA256, EFI_CERT_X509,
    EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE, SHIM_LOCK,
};

const EV_SEPARATOR: u32 = 0x0000_0004;
const EV_S_CRTM_VERSION: u32 = 0x0000_0008;
const EV_IPL: u32 = 0x0000_000D;
const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
const EV_EFI_ACTION: u32 = 0x8000_0007;
const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00E0;

/// The platform owner's GUID on PK, and the vendor's on KEK, db and dbx.
const OWNER_PLATFORM: Guid = Guid(
    0x3b053091,
    0x6c9f,
    0x04cc,
    [0xb1, 0xac, 0xe2, 0xa5, 0x1e, 0x3b, 0xe5, 0xf5],
);
const OWNER_VENDOR: Guid = Guid(
    0x77fa9abd,
    0x0359,
    0x4d32,
    [0xbd, 0x60, 0x28, 0xf4, 0xe7, 0x8f, 0x78, 0x4b],
);
const DISK: Guid = Guid(
    0x5b7c1f0e,
    0x2d4a,
    0x4e61,
    [0x9a, 0x3b, 0x8c, 0x2d, 0x1e, 0x0f, 0x4a, 0x5b],
);
const ESP_TYPE: Guid = Guid(
    0xc12a7328,
    0xf81f,
    0x11d2,
    [0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b],
);
const ESP: Guid = Guid(
    0x0a1b2c3d,
    0x4e5f,
    0x4061,
    [0x82, 0x73, 0x94, 0xa5, 0xb6, 0xc7, 0xd8, 0xe9],
);
const LINUX_TYPE: Guid = Guid(
    0x0fc63daf,
    0x8483,
    0x4772,
    [0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4],
);
const ROOT: Guid = Guid(
    0x9f8e7d6c,
    0x5b4a,
    0x4392,
    [0x81, 0x70, 0x6f, 0x5e, 0x4d, 0x3c, 0x2b, 0x1a],
);

/// What can differ between two boots of the machine.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The `SecureBoot` variable: on (1) or off (0). With it off the
    /// firmware records no image authorities.
    pub secure_boot: bool,
    /// The kernel version in file names and on the command line.
    pub kernel_version: String,
    /// Which build of that kernel: another build is other bytes, so other
    /// digests, under the same names.
    pub kernel_build: u32,
    /// The kernel command line after the image path.
    pub kernel_args: String,
}

impl Default for Boot {
    fn default() -> Self {
        Self {
            secure_boot: true,
            kernel_version: "6.1.0-18-amd64".into(),
            kernel_build: 1,
            kernel_args: "root=UUID=9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a ro quiet".into(),
        }
    }
}

/// How much of a "file" is made and hashed: its size in the events is the
/// size it claims, its digest is over this much deterministic content.
const CONTENT: usize = 64 * 1024;

/// Deterministic content for a "file" named `label`: `len` bytes of a
/// SHA-256 counter stream.
fn content(label: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u32;
    while out.len() < len {
        let mut block = label.as_bytes().to_vec();
        block.extend_from_slice(&counter.to_le_bytes());
        out.extend_from_slice(&openssl::sha::sha256(&block));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// A GRUB `EV_IPL` string event: the NUL-terminated text in the data, the
/// digest over `measured`.
fn ipl(log: &mut LogWriter, pcr: u32, text: &str, measured: &[u8]) {
    let mut data = text.as_bytes().to_vec();
    data.push(0);
    let digests = log.digests_of(measured);
    log.event(pcr, EV_IPL, &digests, &data);
}

/// An `EV_EFI_ACTION`: the ASCII text, no terminator, digest over it.
fn action(log: &mut LogWriter, pcr: u32, text: &str) {
    log.measured(pcr, EV_EFI_ACTION, text.as_bytes());
}

/// A UEFI image loaded from `path` on the ESP (or from memory when `path`
/// is `None`, as shim loads the kernel): the digest is over the image, as
/// the Authenticode digest is.
fn image(log: &mut LogWriter, base: u64, label: &str, len: usize, path: Option<&str>) {
    let bytes = content(label, CONTENT.min(len));
    let device_path = path.map_or_else(Vec::new, |p| file_device_path(ESP, p));
    let data = image_load_event(base, len as u64, &device_path);
    let digests = log.digests_of(&bytes);
    log.event(4, EV_EFI_BOOT_SERVICES_APPLICATION, &digests, &data);
}

/// The whole log of one boot, in the banks given.
pub fn boot_log(banks: &[Bank], keys: &Keys, boot: &Boot) -> Vec<u8> {
    let mut log = LogWriter::new(banks);
    let paths = Paths::of(boot);
    firmware(&mut log);
    secure_boot_config(&mut log, keys, boot);
    boot_manager(&mut log);
    shim(&mut log, keys, boot);
    grub(&mut log, keys, boot, &paths);
    kernel(&mut log, boot, &paths);
    action(&mut log, 5, "Exit Boot Services Invocation");
    action(&mut log, 5, "Exit Boot Services Returned with Success");
    log.finish()
}

/// The files GRUB loads and the command line it passes.
struct Paths {
    kernel: String,
    initrd: String,
    cmdline: String,
}

impl Paths {
    fn of(boot: &Boot) -> Self {
        let kernel = format!("/vmlinuz-{}", boot.kernel_version);
        Self {
            initrd: format!("/initrd.img-{}", boot.kernel_version),
            cmdline: format!("{kernel} {}", boot.kernel_args),
            kernel,
        }
    }
}

/// The S-CRTM and the firmware volumes (PEI, DXE).
fn firmware(log: &mut LogWriter) {
    let mut version = utf16("edk2-stable202302 keylime-agent test firmware");
    version.extend_from_slice(&[0, 0]);
    log.measured(0, EV_S_CRTM_VERSION, &version);
    for (base, len, label) in [
        (0x0082_0000u64, 0x000e_0000usize, "firmware volume PEIFV"),
        (0x0090_0000, 0x0030_0000, "firmware volume DXEFV"),
    ] {
        let digests = log.digests_of(&content(label, 4096));
        log.event(
            0,
            EV_EFI_PLATFORM_FIRMWARE_BLOB,
            &digests,
            &firmware_blob(base, len as u64),
        );
    }
}

/// The Secure Boot configuration, then PCR 7's separator.
fn secure_boot_config(log: &mut LogWriter, keys: &Keys, boot: &Boot) {
    let dbx = signature_list(
        EFI_CERT_SHA256,
        &[
            (OWNER_VENDOR, content("revoked image 1", 32)),
            (OWNER_VENDOR, content("revoked image 2", 32)),
        ],
    );
    let config: [(Guid, &str, Vec<u8>); 5] = [
        (
            EFI_GLOBAL_VARIABLE,
            "SecureBoot",
            vec![u8::from(boot.secure_boot)],
        ),
        (
            EFI_GLOBAL_VARIABLE,
            "PK",
            signature_list(EFI_CERT_X509, &[(OWNER_PLATFORM, keys.pk.clone())]),
        ),
        (
            EFI_GLOBAL_VARIABLE,
            "KEK",
            signature_list(EFI_CERT_X509, &[(OWNER_VENDOR, keys.kek.clone())]),
        ),
        (
            EFI_IMAGE_SECURITY_DATABASE,
            "db",
            signature_list(EFI_CERT_X509, &[(OWNER_VENDOR, keys.db.clone())]),
        ),
        (EFI_IMAGE_SECURITY_DATABASE, "dbx", dbx),
    ];
    for (guid, name, data) in &config {
        log.measured(
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            &variable_data(*guid, name, data),
        );
    }
    separator(log, 7);
}

/// The boot options, then the boot manager starts Boot0001.
fn boot_manager(log: &mut LogWriter) {
    let boot_order = 1u16.to_le_bytes().to_vec();
    log.event(
        1,
        EV_EFI_VARIABLE_BOOT,
        &log.digests_of(&boot_order),
        &variable_data(EFI_GLOBAL_VARIABLE, "BootOrder", &boot_order),
    );
    let option = load_option("debian", r"\EFI\debian\shimx64.efi");
    log.event(
        1,
        EV_EFI_VARIABLE_BOOT,
        &log.digests_of(&option),
        &variable_data(EFI_GLOBAL_VARIABLE, "Boot0001", &option),
    );
    action(log, 4, "Calling EFI Application from Boot Option");
    for pcr in 0..7 {
        separator(log, pcr);
    }
    log.measured(
        5,
        EV_EFI_GPT_EVENT,
        &gpt_data(
            DISK,
            &[
                (ESP_TYPE, ESP, "EFI System Partition"),
                (LINUX_TYPE, ROOT, "root"),
            ],
        ),
    );
}

/// shim, verified against db; it measures its MOK lists and SBAT level.
fn shim(log: &mut LogWriter, keys: &Keys, boot: &Boot) {
    image(
        log,
        0x7e4a_1000,
        "shimx64.efi 15.7",
        950_000,
        Some(r"\EFI\debian\shimx64.efi"),
    );
    if boot.secure_boot {
        authority(
            log,
            EFI_IMAGE_SECURITY_DATABASE,
            "db",
            OWNER_VENDOR,
            &keys.db,
        );
    }
    let mok_list = signature_list(EFI_CERT_X509, &[(SHIM_LOCK, keys.vendor.clone())]);
    ipl(log, 14, "MokList", &mok_list);
    let mok_list_x = signature_list(EFI_CERT_SHA256, &[(SHIM_LOCK, content("revoked MOK", 32))]);
    ipl(log, 14, "MokListX", &mok_list_x);
    ipl(log, 14, "MokListTrusted", &[1]);
    if boot.secure_boot {
        log.measured(
            7,
            EV_EFI_VARIABLE_AUTHORITY,
            &variable_data(
                SHIM_LOCK,
                "SbatLevel",
                b"sbat,1,2022111500\nshim,2\ngrub,3\n",
            ),
        );
    }
}

/// GRUB, verified by shim against its vendor certificate.
fn grub(log: &mut LogWriter, keys: &Keys, boot: &Boot, paths: &Paths) {
    image(
        log,
        0x7e2b_3000,
        "grubx64.efi 2.06",
        2_500_000,
        Some(r"\EFI\debian\grubx64.efi"),
    );
    if boot.secure_boot {
        authority(log, SHIM_LOCK, "Shim", SHIM_LOCK, &keys.vendor);
    }
    let grub_cfg = content("grub.cfg", 6000);
    ipl(log, 9, "(hd0,gpt1)/EFI/debian/grub.cfg", &grub_cfg);
    for command in [
        "set root=hd0,gpt2".to_string(),
        format!("linux {}", paths.cmdline),
        format!("initrd {}", paths.initrd),
    ] {
        ipl(log, 8, &format!("grub_cmd: {command}"), command.as_bytes());
    }
}

/// The kernel: GRUB measures the file and the command line, then
/// shim loads the image, then GRUB reads the initrd.
fn kernel(log: &mut LogWriter, boot: &Boot, paths: &Paths) {
    let kernel_label = format!(
        "vmlinuz {} build {}",
        boot.kernel_version, boot.kernel_build
    );
    ipl(
        log,
        9,
        &format!("(hd0,gpt2){}", paths.kernel),
        &content(&kernel_label, CONTENT),
    );
    ipl(
        log,
        8,
        &format!("kernel_cmdline: (hd0,gpt2){}", paths.cmdline),
        format!("(hd0,gpt2){}", paths.cmdline).as_bytes(),
    );
    image(log, 0x6d00_0000, &kernel_label, 8_000_000, None);
    let initrd_label = format!("initrd {} build {}", boot.kernel_version, boot.kernel_build);
    ipl(
        log,
        9,
        &format!("(hd0,gpt2){}", paths.initrd),
        &content(&initrd_label, CONTENT),
    );
}

fn separator(log: &mut LogWriter, pcr: u32) {
    log.measured(pcr, EV_SEPARATOR, &[0, 0, 0, 0]);
}

/// `EV_EFI_VARIABLE_AUTHORITY`: the signature database entry that verified
/// an image.
fn authority(log: &mut LogWriter, guid: Guid, name: &str, owner: Guid, cert: &[u8]) {
    log.measured(
        7,
        EV_EFI_VARIABLE_AUTHORITY,
        &variable_data(guid, name, &signature_data(owner, cert)),
    );
}

/// `EFI_LOAD_OPTION` of an active boot entry for an EFI file on the ESP.
fn load_option(description: &str, path: &str) -> Vec<u8> {
    let device_path = file_device_path(ESP, path);
    let mut out = 1u32.to_le_bytes().to_vec(); // LOAD_OPTION_ACTIVE
    out.extend_from_slice(&(device_path.len() as u16).to_le_bytes());
    out.extend_from_slice(&utf16(description));
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&device_path);
    out
}

mod keys;

pub use keys::Keys;

#[cfg(test)]
mod tests;
