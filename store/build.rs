//! Rebuilds the crate when a migration is added or changed: the migrations
//! are embedded by `sqlx::migrate!`, which cargo does not otherwise watch
//! (as sqlx's `migrate!` documentation advises).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
