//! A perfectly good shared library that is not a hotswap module.

/// Some C-callable function, the kind any shared library exports.
#[unsafe(no_mangle)]
pub extern "C" fn add_numbers(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}
