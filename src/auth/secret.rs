//! Where the JWT secret comes from: the configuration, or (embedded mode only) a random one
//! generated on first start and kept in the data directory so tokens survive restarts.

use std::io::Write;
use std::path::Path;

use rand::Rng;

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

/// The configured secret, else the data directory's, else a new one stored there. With an
/// external database (`external`), nodes must share one secret, so none is made up.
pub fn load_or_create(
    configured: Option<&Secret>,
    data_dir: &Path,
    external: bool,
) -> Result<Secret, SecretError> {
    if let Some(secret) = configured.filter(|s| !s.expose().is_empty()) {
        return Ok(secret.clone());
    }
    if external {
        return Err(SecretError::MissingForCluster);
    }
    from_data_dir(data_dir).map(Secret::new)
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
        let a = load_or_create(None, dir.path(), false).unwrap();
        let b = load_or_create(None, dir.path(), false).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.expose().len(), 64);
    }

    #[test]
    fn mysql_without_secret_refuses() {
        let nowhere = Path::new("/nonexistent");
        assert!(matches!(
            load_or_create(None, nowhere, true),
            Err(SecretError::MissingForCluster)
        ));
        let given = Secret::new("given");
        assert_eq!(load_or_create(Some(&given), nowhere, true).unwrap(), given);
    }
}
