//! The original's email rule (go-playground/validator v10.4.1 `email`), ported as the same
//! HTML5-like regex so signups the original accepts or rejects behave the same here.

use std::sync::LazyLock;

use regex::Regex;

// The validator's emailRegexString, rebuilt from its parts so it can be read: a dot-atom or
// quoted local part, then labels that start and end with a letter or digit, then a TLD that
// starts and ends with a letter, and an optional trailing dot. `U` is the non-ASCII range
// the validator admits wherever it admits letters.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    const U: &str = r"\x{00A0}-\x{D7FF}\x{F900}-\x{FDCF}\x{FDF0}-\x{FFEF}";
    let atext = format!(r"[a-zA-Z0-9!#$%&'*+\-/=?^_`{{|}}~{U}]");
    let dot_atom = format!(r"{atext}+(?:\.{atext}+)*");
    let quoted = format!(
        r#""(?:[\x20\x09]|[\x01-\x08\x0b\x0c\x0e-\x1f\x7f\x21\x23-\x5b\x5d-\x7e{U}]|\\[\x01-\x09\x0b\x0c\x0d-\x7f{U}])*""#
    );
    let edge = format!(r"[a-zA-Z0-9{U}]");
    let inner = format!(r"[a-zA-Z0-9\-.~{U}]");
    let label = format!(r"(?:{edge}|{edge}{inner}*{edge})");
    let tld_edge = format!(r"[a-zA-Z{U}]");
    let tld = format!(r"(?:{tld_edge}|{tld_edge}{inner}*{tld_edge})");
    Regex::new(&format!(
        r"^(?:{dot_atom}|{quoted})@(?:{label}\.)+{tld}\.?$"
    ))
    .expect("email regex compiles")
});

/// True when the original would accept `s` as an email address.
pub fn is_valid(s: &str) -> bool {
    EMAIL.is_match(s)
}

/// The key under which an email is unique: case-insensitive, trailing spaces ignored,
/// as MySQL's `utf8mb4_unicode_ci` collation made it in the original.
pub fn unique_key(s: &str) -> String {
    s.trim_end_matches(' ').to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_the_original_accepts() {
        for ok in [
            "ming@ming.com",
            "u1@ex.com",
            "a.b+c@sub.example.org",
            "x@y.co.",
            "\"quoted local\"@example.com",
        ] {
            assert!(is_valid(ok), "{ok} should be valid");
        }
    }

    #[test]
    fn rejects_what_the_original_rejects() {
        for bad in [
            "a@b",
            "a@b.1",
            "ab.com",
            "a@.com",
            "not-an-email",
            "",
            "a@b.c1",
            "@x.com",
        ] {
            assert!(!is_valid(bad), "{bad} should be invalid");
        }
    }

    #[test]
    fn unique_key_folds_case_and_trailing_spaces() {
        assert_eq!(unique_key("U1@EX.COM  "), "u1@ex.com");
    }
}
