//! Counts said in plain English (`1 epoch`, `3 epochs`) and numbers as a person types them (`1e39`):
//! the messages and progress lines of every module share them.

/// `1 epoch`, `3 epochs`.
pub fn epochs(n: usize) -> String {
    if n == 1 { "1 epoch".into() } else { format!("{n} epochs") }
}

/// `x` as a person types it: `0.001`, `-5`, `1e39` rather than forty digits.
pub fn number(x: f64) -> String {
    if x != 0.0 && x.is_finite() && !(1e-4..1e6).contains(&x.abs()) { format!("{x:e}") } else { x.to_string() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_read_as_typed() {
        let shown = [1e39, 0.001, -5.0, 3e-7, 0.0].map(super::number);
        assert_eq!(shown, ["1e39", "0.001", "-5", "3e-7", "0"]);
    }
}
