//! `timer` 2.0.0: the code of `timer` 1.0.0 (see its docs) under the next
//! version, so a test can show a timer set on 1.0.0 firing on 2.0.0.

include!("../../timer/src/module.rs");
