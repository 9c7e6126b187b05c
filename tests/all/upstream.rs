//! A local HTTP upstream for guests' outgoing requests: it counts the requests and
//! connections it gets and keeps their headers; it answers `upstream ok`, or, when
//! made with [`Upstream::silent`], never answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

pub(crate) struct Upstream {
    pub(crate) port: u16,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    headers: Arc<Mutex<Vec<http::HeaderMap>>>,
}

impl Upstream {
    pub(crate) async fn start() -> Upstream {
        Upstream::serve(false).await
    }

    /// An upstream that takes requests and never answers them.
    pub(crate) async fn silent() -> Upstream {
        Upstream::serve(true).await
    }

    async fn serve(silent: bool) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let port = listener.local_addr().expect("its address").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let (r, c, h) = (requests.clone(), connections.clone(), headers.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, h) = (r.clone(), h.clone());
                let service = hyper::service::service_fn(move |request: http::Request<_>| {
                    let (r, h) = (r.clone(), h.clone());
                    async move {
                        h.lock().expect("headers").push(request.headers().clone());
                        r.fetch_add(1, Ordering::SeqCst);
                        if silent {
                            std::future::pending::<()>().await;
                        }
                        let body: hyper::body::Incoming = request.into_body();
                        let _ = http_body_util::BodyExt::collect(body).await;
                        Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"upstream ok"),
                        )))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Upstream {
            port,
            requests,
            connections,
            headers,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The headers of every request received, in order.
    pub(crate) fn headers(&self) -> Vec<http::HeaderMap> {
        self.headers.lock().expect("headers").clone()
    }
}
