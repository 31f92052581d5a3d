//! Values that must never be printed: the JWT secret and database URLs that carry a password.
//! Their `Debug` and `Display` redact, so a `{:?}` of the configuration, an error message or a
//! log line cannot leak them; the raw value is only had through an explicit `expose()`.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// What a redacted value prints instead of itself.
const REDACTED: &str = "***";

/// A secret string (the JWT signing secret): prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret so that it can no longer be printed by accident.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (signing keys).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl FromStr for Secret {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// A database URL (`mysql://user:password@host:3306/db`, or a SQLite path) that prints with
/// its password replaced: `mysql://user:***@host:3306/db`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL so that its password can no longer be printed by accident.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for a MySQL/MariaDB URL (anything else is a SQLite file).
    pub fn is_mysql(&self) -> bool {
        self.0.starts_with("mysql://")
    }

    /// `text` (typically a driver's error message) with this URL's password replaced by `***`
    /// wherever it appears, so that errors about this database can be shown as they are.
    pub fn scrub(&self, text: &str) -> String {
        match password(&self.0) {
            Some(pw) if !pw.is_empty() => text.replace(pw, REDACTED),
            _ => text.to_owned(),
        }
    }
}

/// The password of `scheme://user:password@rest`, if the URL has one. The last `@` ends the
/// user info, so an unencoded `@` in a password is still covered (and at worst more than the
/// password is hidden).
fn password(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let (userinfo, _) = rest.rsplit_once('@')?;
    match userinfo.split_once(':') {
        Some((_, password)) => Some(password),
        // NATS reads `nats://TOKEN@host` as a token: all of it is secret.
        None if matches!(scheme, "nats" | "tls") => Some(userinfo),
        None => None,
    }
}

/// The URL as it may be shown.
fn redacted(url: &str) -> Cow<'_, str> {
    match password(url) {
        Some(pw) => {
            // `password` is a subslice of `url`: cut it out by position.
            let start = pw.as_ptr() as usize - url.as_ptr() as usize;
            let end = start + pw.len();
            Cow::Owned(format!("{}{REDACTED}{}", &url[..start], &url[end..]))
        }
        None => Cow::Borrowed(url),
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redacted(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", redacted(&self.0))
    }
}

impl FromStr for DatabaseUrl {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl From<String> for DatabaseUrl {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_prints_without_its_password() {
        let url = DatabaseUrl::new("mysql://root:hunter2@db.example:3306/shop?ssl-mode=required");
        let shown = "mysql://root:***@db.example:3306/shop?ssl-mode=required";
        assert_eq!(url.to_string(), shown);
        assert_eq!(format!("{url:?}"), format!("DatabaseUrl({shown:?})"));
        assert_eq!(
            url.expose(),
            "mysql://root:hunter2@db.example:3306/shop?ssl-mode=required"
        );
    }

    #[test]
    fn urls_without_a_password_print_as_they_are() {
        for plain in ["mysql://root@127.0.0.1:3306/shop", "/var/lib/shop/order.db"] {
            assert_eq!(DatabaseUrl::new(plain).to_string(), plain);
        }
    }

    #[test]
    fn a_password_with_an_at_sign_is_hidden_whole() {
        let url = DatabaseUrl::new("mysql://app:p@ss:w0rd@host/db");
        assert_eq!(url.to_string(), "mysql://app:***@host/db");
    }

    #[test]
    fn driver_messages_are_scrubbed_of_the_password() {
        let url = DatabaseUrl::new("mysql://root:hunter2@host/db");
        assert_eq!(
            url.scrub("bad url mysql://root:hunter2@host/db: hunter2"),
            "bad url mysql://root:***@host/db: ***"
        );
        let empty = DatabaseUrl::new("mysql://root:@host/db");
        assert_eq!(empty.scrub("some error"), "some error");
    }

    #[test]
    fn a_secret_prints_as_stars() {
        let s: Secret = "s3cret-value".parse().unwrap();
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "s3cret-value");
    }
}
