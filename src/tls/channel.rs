//! gRPC channels over TLS 1.3 with SPIFFE peer verification.

use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long a TCP connect plus TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An endpoint for `addr` (`HOST:PORT`) whose connections are made with
/// `config` (see [`super::client_config`]).
fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(CONNECT_TIMEOUT))
}

fn connector(
    addr: String,
    config: Arc<rustls::ClientConfig>,
) -> impl tower::Service<
    Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    let connector = tokio_rustls::TlsConnector::from(config);
    tower::service_fn(move |_: Uri| {
        let (addr, connector) = (addr.clone(), connector.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            // gRPC sends small frames and waits for answers: Nagle's
            // algorithm would hold them for the peer's delayed ACK.
            tcp.set_nodelay(true)?;
            // Any name will do: the verifier checks the SPIFFE ID instead.
            let name = rustls_pki_types::ServerName::try_from("sigil-server")
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    })
}

/// Connects now; fails if the server cannot be reached.
pub async fn connect(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, tonic::transport::Error> {
    endpoint(addr)?
        .connect_with_connector(connector(addr.to_owned(), config))
        .await
}

/// A channel that connects on first use and reconnects after failures, so a
/// server that is down does not stop the caller from starting.
pub fn connect_lazy(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    request_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(addr)?
        .timeout(request_timeout)
        .connect_with_connector_lazy(connector(addr.to_owned(), config)))
}
