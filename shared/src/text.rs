//! Text helpers of the per-record hot path.

/// `str::trim`, but a value that starts and ends with a visible ASCII
/// character (nearly every field and key) is returned without walking its
/// characters: no whitespace, ASCII or Unicode, is a visible ASCII byte.
pub(crate) fn trim(s: &str) -> &str {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn trim_is_str_trim(s in "[ \t\r\n\u{a0}\u{2003}\u{85}a-z0-9\\-:.é]{0,12}") {
            proptest::prop_assert_eq!(trim(&s), s.trim());
        }
    }
}
