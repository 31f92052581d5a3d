//! Argon2id password hashing (the original's bcrypt silently ignored bytes past 72).
//! Each hash or check costs ~50 ms of CPU and 19 MiB of memory, so [`run`] runs them on
//! blocking threads, at most one per core at a time: a burst of sign-ups neither starves the
//! other threads nor multiplies the memory held.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

static SLOTS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

/// Runs password work on a blocking thread once a slot is free.
pub async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let _slot = SLOTS.acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())
}

/// PHC string of an Argon2id hash of `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// True when `password` matches the stored PHC hash.
pub fn verify(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_verifies_only_the_same_password_including_bytes_past_72() {
        let long = "x".repeat(100);
        let h = super::hash(&long).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(super::verify(&long, &h));
        assert!(!super::verify(&format!("{}y", &long[..99]), &h));
    }
}
