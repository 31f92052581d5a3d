//! The original's field rules (validator v10 `required`, `min`, `max`, `email`), plus the
//! column limits it left to MySQL (which answered 500): here they are 400s.

use super::error::ApiError;
use crate::domain::email;

/// A required text field: non-empty and at most `max` characters (runes, as the original).
pub fn text(value: &str, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n == 0 || n > max {
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

/// A password: 8 to 128 characters.
pub fn password(value: &str) -> Result<(), ApiError> {
    let n = value.chars().count();
    if !(8..=128).contains(&n) {
        return Err(ApiError::invalid());
    }
    Ok(())
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
}
