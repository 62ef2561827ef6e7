//! The TLS files of `amqps://` connections: `--tls-ca`, `--tls-cert` and
//! `--tls-key` (or `CHIT_TLS_CA`, `CHIT_TLS_CERT`, `CHIT_TLS_KEY`), else the
//! config file's `tls_ca`, `tls_cert` and `tls_key`, relative to the file's
//! directory. Each file is merged on its own, so a flag can replace one
//! file of the config file's set.
//!
//! Nothing is read here: broker-link reads and checks the files on every
//! connection (a bad one is reported by name), so commands that never
//! connect are not stopped by a bad TLS setting.

use super::FileConfig;
use crate::cmd::TlsArgs;
use broker_link::TlsConfig;
use std::path::{Path, PathBuf};

/// The TLS settings for broker-link: each flag (or its variable) beats the
/// config file's key.
pub fn tls_config(flags: TlsArgs, file: &FileConfig) -> TlsConfig {
    let from_file = |p: &Option<PathBuf>| p.as_deref().map(|p| relative_to_file(file, p));
    TlsConfig {
        ca: flags.tls_ca.or_else(|| from_file(&file.tls_ca)),
        cert: flags.tls_cert.or_else(|| from_file(&file.tls_cert)),
        key: flags.tls_key.or_else(|| from_file(&file.tls_key)),
    }
}

/// `path` as written in the config file: relative to the file's directory.
fn relative_to_file(file: &FileConfig, path: &Path) -> PathBuf {
    match file.path.as_deref().and_then(Path::parent) {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cli;
    use clap::Parser;

    fn flags(args: &[&str]) -> TlsArgs {
        let argv = ["chit"].iter().chain(args).chain(&["topology", "show"]);
        Cli::try_parse_from(argv).expect("valid flags").tls
    }

    #[test]
    fn a_flag_beats_the_file_which_is_read_relative_to_itself() {
        let mut file: FileConfig = toml::from_str(
            "tls_ca = \"certs/ca.pem\"\ntls_cert = \"/abs/c.pem\"\ntls_key = \"k.pem\"",
        )
        .unwrap();
        file.path = Some("/etc/chit/chit.toml".into());
        let c = tls_config(TlsArgs::default(), &file);
        assert_eq!(c.ca.as_deref(), Some(Path::new("/etc/chit/certs/ca.pem")));
        assert_eq!(c.cert.as_deref(), Some(Path::new("/abs/c.pem")));
        assert_eq!(c.key.as_deref(), Some(Path::new("/etc/chit/k.pem")));
        let c = tls_config(flags(&["--tls-ca", "/flag/ca.pem"]), &file);
        assert_eq!(c.ca.as_deref(), Some(Path::new("/flag/ca.pem")));
        assert_eq!(c.key.as_deref(), Some(Path::new("/etc/chit/k.pem")));
    }

    #[test]
    fn no_setting_is_the_system_store() {
        assert!(tls_config(TlsArgs::default(), &FileConfig::default()).is_empty());
    }
}
