//! The example and fixture modules, compiled by `build.rs` from `modules/`.

include!(concat!(env!("OUT_DIR"), "/modules.rs"));
