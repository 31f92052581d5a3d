//! Credentials: HS256 token pairs with the original's claims, and Argon2id password hashes.

pub mod password;
pub mod secret;
pub mod tokens;
