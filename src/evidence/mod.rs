//! Evidence besides the quote: the IMA runtime measurement list (read
//! incrementally, served as a byte range of the file) and the UEFI boot
//! event log (read once per boot and cached; parsed by [`tcg`]), and the
//! boot time.

mod boot;
mod escape;
mod ima;
pub mod tcg;
mod uefi;

pub use boot::boot_time;
pub use escape::escape_json_into;
pub use ima::{ImaLog, ImaSlice, SliceReader};
pub use uefi::UefiLog;
