//! Prints the paths of the built counter test modules, one `NAME=PATH` a
//! line, for shell scripts (`scripts/http_load.sh`):
//!
//! ```sh
//! cargo run --release -q -p hotswap-bench --bin module-paths
//! ```

use hotswap_test_modules::{COUNTER_V1, COUNTER_V2};

fn main() {
    println!("COUNTER_V1={COUNTER_V1}");
    println!("COUNTER_V2={COUNTER_V2}");
}
