//! Counts said in plain English (`1 epoch`, `3 epochs`): the messages and progress lines of every
//! module share them.

/// `1 epoch`, `3 epochs`.
pub fn epochs(n: usize) -> String {
    if n == 1 { "1 epoch".into() } else { format!("{n} epochs") }
}
