//! Credentials: HS256 token pairs with the original's claims, Argon2id password hashes, and
//! the login throttle with the client address it keys on.

pub mod password;
pub mod proxies;
pub mod secret;
pub mod throttle;
pub mod tokens;
