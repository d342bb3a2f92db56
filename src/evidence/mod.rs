//! Evidence besides the quote: the IMA runtime measurement list (read
//! incrementally, served as a byte range of the file) and the UEFI boot
//! event log (read once, cached), and the boot time.

mod boot;
mod ima;
mod uefi;

pub use boot::boot_time;
pub use ima::{ImaLog, ImaSlice};
pub use uefi::UefiLog;
