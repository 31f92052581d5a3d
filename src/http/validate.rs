//! The original's field rules (validator v10 `required`, `min`, `max`, `email`), plus the
//! column limits it left to MySQL (which answered 500): here they are 400s. Unlike the
//! original, text never holds control characters (NUL, CR, LF, ...): stored text is echoed in
//! JSON and may one day reach a header or a log line, so it is refused at the door. Only the
//! fields that are naturally multi-line ([`multiline_text`]) keep CR, LF and tab.

use super::error::ApiError;
use crate::domain::email;

/// A required text field: non-empty, at most `max` characters (runes, as the original), no
/// control characters.
pub fn text(value: &str, max: usize) -> Result<(), ApiError> {
    bounded(value, max, |c| !c.is_control())
}

/// A required text field that may span lines (an address, a description): as [`text`], but
/// CR, LF and tab are allowed.
pub fn multiline_text(value: &str, max: usize) -> Result<(), ApiError> {
    bounded(value, max, |c| {
        !c.is_control() || matches!(c, '\n' | '\r' | '\t')
    })
}

fn bounded(value: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n == 0 || n > max || !value.chars().all(allowed) {
        return Err(ApiError::invalid());
    }
    Ok(())
}

/// A required email field by the original's rule, at most 320 characters.
pub fn email_address(value: &str) -> Result<(), ApiError> {
    text(value, 320)?;
    if !email::is_valid(value) {
        return Err(ApiError::invalid());
    }
    Ok(())
}

/// A password: 8 to 128 characters, no control characters.
pub fn password(value: &str) -> Result<(), ApiError> {
    if value.chars().count() < 8 {
        return Err(ApiError::invalid());
    }
    text(value, 128)
}

/// A strictly positive integer (prices, stock, amounts).
pub fn positive(value: i64) -> Result<(), ApiError> {
    if value <= 0 {
        return Err(ApiError::invalid());
    }
    Ok(())
}

/// Column limits, in characters.
pub mod limits {
    pub const NAME: usize = 50;
    pub const PHONE: usize = 20;
    pub const ADDRESS: usize = 1024;
    pub const PRODUCT_NAME: usize = 256;
    pub const DESCRIPTION: usize = 16_000;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_length_counts_characters() {
        assert!(password("abcd543").is_err());
        assert!(password("abcd5432").is_ok());
        assert!(password(&"é".repeat(128)).is_ok());
        assert!(password(&"a".repeat(129)).is_err());
    }

    #[test]
    fn text_is_required_and_bounded() {
        assert!(text("", 5).is_err());
        assert!(text(" ", 5).is_ok());
        assert!(text("abcdef", 5).is_err());
        assert!(positive(0).is_err());
        assert!(positive(-5).is_err());
        assert!(positive(1).is_ok());
    }

    #[test]
    fn control_characters_are_refused_but_line_breaks_in_multiline_fields() {
        for bad in ["a\0b", "a\r\nb", "a\nb", "\u{7f}", "a\u{85}b"] {
            assert!(text(bad, 50).is_err(), "{bad:?}");
        }
        assert!(password("abcd5432\0").is_err());
        assert!(multiline_text("taipei\r\nroad 1\tno. 2", 50).is_ok());
        assert!(multiline_text("a\0b", 50).is_err());
        assert!(multiline_text("", 50).is_err());
    }
}
