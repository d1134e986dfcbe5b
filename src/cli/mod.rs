//! (filled in by its owner)
pub fn main() -> i32 {
    0
}
