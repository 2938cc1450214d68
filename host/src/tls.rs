//! TLS settings of a host and its clients (rustls, through tonic): PEM files
//! read once, with errors that name the file.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::{Error, Result};

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("reading the {what} {}", path.display()), e))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN") {
        return Err(Error::invalid(format!("{} is not a PEM file (expected the {what})", path.display())));
    }
    Ok(bytes)
}

/// What a host presents to its callers: its certificate chain and key.
#[derive(Clone, Debug)]
pub struct ServerTls {
    identity: Identity,
}

impl ServerTls {
    /// Reads a PEM certificate chain and its PEM private key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self> {
        let identity = Identity::from_pem(read(cert, "certificate")?, read(key, "private key")?);
        Ok(ServerTls { identity })
    }

    /// The tonic server configuration.
    pub fn config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity.clone())
    }
}

/// What a client trusts: a CA certificate that signed the hosts'
/// certificates. Connections made with it use `https`, and the host's
/// certificate must name the address dialled (DNS name or IP).
#[derive(Clone, Debug)]
pub struct ClientTls {
    ca: Certificate,
}

impl ClientTls {
    /// Reads the PEM CA certificate.
    pub fn from_file(ca: &Path) -> Result<Self> {
        Ok(ClientTls { ca: Certificate::from_pem(read(ca, "CA certificate")?) })
    }

    /// The tonic client configuration.
    pub fn config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(self.ca.clone())
    }
}

/// An endpoint for `address`, over TLS when `tls` is given.
pub fn endpoint(address: &str, tls: Option<&ClientTls>) -> Result<tonic::transport::Endpoint> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| Error::invalid(format!("address '{address}': {e}")))?;
    match tls {
        Some(t) => endpoint.tls_config(t.config()).map_err(|e| Error::invalid(format!("TLS for {address}: {e}"))),
        None => Ok(endpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named() {
        let err = ClientTls::from_file(Path::new("/no/such/ca.pem")).unwrap_err().to_string();
        assert!(err.contains("/no/such/ca.pem") && err.contains("CA certificate"), "{err}");
        let err = ServerTls::from_files(Path::new("Cargo.toml"), Path::new("Cargo.toml")).unwrap_err().to_string();
        assert!(err.contains("not a PEM file"), "{err}");
    }
}
