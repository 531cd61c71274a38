//! What a module built by a future SDK looks like to this host: the frozen
//! descriptor header with a newer ABI version. The host must refuse it after
//! reading only the header, naming both versions.

use hotswap_abi::{ABI_VERSION, DescriptorHeader, MAGIC};

static HEADER: DescriptorHeader = DescriptorHeader {
    magic: MAGIC,
    abi_version: ABI_VERSION + 1,
    descriptor_size: size_of::<DescriptorHeader>() as u32,
};

/// The descriptor entry point, as any hotswap module exports it.
#[unsafe(no_mangle)]
pub extern "C" fn hotswap_module_descriptor() -> *const DescriptorHeader {
    &HEADER
}
