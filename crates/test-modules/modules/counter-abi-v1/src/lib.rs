//! What a module built by an SDK of ABI 1 (before the host-services table)
//! looks like to this host: the frozen descriptor header with ABI version 1.
//! The host must refuse it after reading only the header, and say to
//! rebuild it with the SDK that matches the host.

use hotswap_abi::{DescriptorHeader, MAGIC};

/// The first ABI, which this host no longer runs.
const OLD_ABI: u32 = 1;
const _: () = assert!(OLD_ABI < hotswap_abi::ABI_VERSION, "this module stands for an older ABI");

static HEADER: DescriptorHeader = DescriptorHeader {
    magic: MAGIC,
    abi_version: OLD_ABI,
    descriptor_size: size_of::<DescriptorHeader>() as u32,
};

/// The descriptor entry point, as any hotswap module exports it.
#[unsafe(no_mangle)]
pub extern "C" fn hotswap_module_descriptor() -> *const DescriptorHeader {
    &HEADER
}
