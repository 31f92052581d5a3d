//! Where the JWT secret comes from: the configuration, or (embedded mode only) a random one
//! generated on first start and kept in the data directory so tokens survive restarts.

use std::io::Write;
use std::path::Path;

use rand::Rng;

use crate::config::Config;
use crate::secrets::Secret;

const SECRET_FILE: &str = "jwt_secret";

/// Why no secret could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "JWT_SECRET is not set: a deployment on an external database needs the same secret on every node; set JWT_SECRET (or --jwt-secret)"
    )]
    MissingForCluster,
    #[error("cannot read or write the JWT secret in {0}: {1}")]
    Io(String, std::io::Error),
}

/// The configured secret, else the data directory's, else a new one stored there.
pub fn load_or_create(config: &Config) -> Result<Secret, SecretError> {
    if let Some(secret) = config
        .jwt_secret
        .as_ref()
        .filter(|s| !s.expose().is_empty())
    {
        return Ok(secret.clone());
    }
    if config.databases.uses_external_database() {
        return Err(SecretError::MissingForCluster);
    }
    from_data_dir(&config.databases.data_dir).map(Secret::new)
}

fn from_data_dir(dir: &Path) -> Result<String, SecretError> {
    let path = dir.join(SECRET_FILE);
    let io = |e| SecretError::Io(path.display().to_string(), e);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let bytes: [u8; 32] = rand::rng().random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(io)?;
    file.write_all(secret.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_secret_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::embedded(dir.path());
        let a = load_or_create(&config).unwrap();
        let b = load_or_create(&config).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.expose().len(), 64);
    }

    #[test]
    fn mysql_without_secret_refuses() {
        let mut config = Config::embedded("/nonexistent");
        config.databases.account_database_url = Some("mysql://root@127.0.0.1/x".into());
        assert!(matches!(
            load_or_create(&config),
            Err(SecretError::MissingForCluster)
        ));
    }
}
