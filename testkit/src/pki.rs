//! A throwaway certificate authority for TLS tests: a CA and the
//! certificates it signs, as PEM files in a temporary directory.

use std::path::PathBuf;

/// A CA with its own directory of PEM files, removed when dropped.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Pki {
    /// A new CA whose subject is `name` (CAs of one test differ by it).
    pub fn new(name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA params: {e}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = params
            .self_signed(&ca_key)
            .unwrap_or_else(|e| panic!("CA certificate: {e}"));
        let dir = crate::workdir::temp_dir("allexpki").unwrap_or_else(|e| panic!("{e}"));
        let pki = Pki { dir, ca, ca_key };
        std::fs::write(pki.ca_path(), pki.ca.pem()).unwrap_or_else(|e| panic!("{e}"));
        pki
    }

    /// The CA certificate's PEM file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate for `names` (DNS names or IP addresses), written as
    /// `<file>.pem` and `<file>.key`; `expired` dates it in 2020.
    pub fn issue(&self, file: &str, names: &[&str], expired: bool) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap_or_else(|e| panic!("params for {names:?}: {e}"));
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .unwrap_or_else(|e| panic!("signing {names:?}: {e}"));
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&issued.key, key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
        issued
    }
}
