//! TLS to PostgreSQL for `tokio-postgres`, on rustls (ring), as the `DATABASE_URL` asks:
//! `sslmode=require` (or libpq's `verify-ca` / `verify-full`, which mean the same here: the
//! server's certificate is always verified, its name included) connects over TLS only;
//! `sslrootcert=FILE` names the PEM roots to trust (on RDS the Amazon RDS bundle), else the
//! system's roots are trusted. Without `sslmode`, or with `prefer` / `disable`, the connection
//! is plain, as before.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use deadpool_postgres::tokio_postgres::config::SslMode;
use deadpool_postgres::tokio_postgres::tls::{self, ChannelBinding, MakeTlsConnect, TlsConnect};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::FaceStoreError;

/// A URL's TLS settings, taken out of it (tokio-postgres knows neither `sslrootcert` nor
/// `verify-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsWish {
    /// TLS required.
    pub required: bool,
    pub root_cert: Option<String>,
}

/// Splits a `postgres://` URL into what tokio-postgres parses and the TLS settings.
pub(crate) fn split_url(url: &str) -> (String, TlsWish) {
    let mut wish = TlsWish {
        required: false,
        root_cert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), wish);
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslrootcert", v)) => wish.root_cert = Some(decode(v)),
            Some(("sslmode", "require" | "verify-ca" | "verify-full")) => {
                wish.required = true;
                kept.push("sslmode=require".to_string());
            }
            _ => kept.push(pair.to_string()),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, wish)
}

/// `%2F` and the like in a query value (a path).
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
            && let Ok(b) = u8::from_str_radix(&v[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connector for a URL's settings: TLS with verified certificates when required, else
/// none, and `config` set to plain (tokio-postgres's `prefer` would try TLS first).
pub(crate) fn connector(
    wish: &TlsWish,
    config: &mut deadpool_postgres::tokio_postgres::Config,
) -> Result<MakeTls, FaceStoreError> {
    if !wish.required && config.get_ssl_mode() != SslMode::Require {
        config.ssl_mode(SslMode::Disable);
        return Ok(MakeTls { config: None });
    }
    let mut roots = rustls::RootCertStore::empty();
    match &wish.root_cert {
        Some(path) => {
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    FaceStoreError::Invalid(format!(
                        "sslrootcert {path}: not PEM certificates ({e})"
                    ))
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(FaceStoreError::Invalid(format!(
                    "sslrootcert {path}: no certificate in it"
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(FaceStoreError::Invalid(
                    "sslmode=require: the system has no root certificates; name the server's CA with sslrootcert=FILE".into(),
                ));
            }
        }
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| FaceStoreError::Invalid(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(MakeTls {
        config: Some(Arc::new(config)),
    })
}

/// Makes a TLS connector per connection (or none).
#[derive(Clone)]
pub(crate) struct MakeTls {
    config: Option<Arc<ClientConfig>>,
}

impl<S> MakeTlsConnect<S> for MakeTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(Connect {
            config: self.config.clone(),
            name,
        })
    }
}

pub(crate) struct Connect {
    config: Option<Arc<ClientConfig>>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            // Without TLS asked for, the connection is set to plain and this is not called.
            let config = self.config.ok_or_else(|| {
                io::Error::new(io::ErrorKind::Unsupported, "TLS was not asked for")
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(self.name, stream)
                .await?;
            Ok(TlsStream(stream))
        })
    }
}

/// A TLS connection to the server.
pub(crate) struct TlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tls::TlsStream for TlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding (tokio-postgres falls back to it).
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_the_url() {
        let (url, wish) = split_url(
            "postgres://u:p@db:5432/faces?sslmode=verify-full&sslrootcert=%2Fetc%2Frds.pem&application_name=x",
        );
        assert_eq!(
            url,
            "postgres://u:p@db:5432/faces?sslmode=require&application_name=x"
        );
        assert_eq!(
            wish,
            TlsWish {
                required: true,
                root_cert: Some("/etc/rds.pem".into())
            }
        );
        let (url, wish) = split_url("postgres://db/faces");
        assert_eq!(
            (url.as_str(), wish.required),
            ("postgres://db/faces", false)
        );
        let (url, wish) = split_url("postgres://db/faces?sslmode=prefer");
        assert_eq!(
            (url.as_str(), wish.required),
            ("postgres://db/faces?sslmode=prefer", false)
        );
    }
}
