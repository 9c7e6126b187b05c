//! HTTP guests: one request served by a `wasi:http/proxy` component in a fresh
//! sandbox, the way `wasmtime serve` serves one, under the same ceilings as any call.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;
use wasmtime::component::Resource;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::registry::Registry;
use crate::sandbox::{CallState, Grants, Host, Outcome, Sandbox, Scope};
use crate::{Digest, Error, Limits};

/// A response from an HTTP guest. Its body may still be streaming from the guest.
pub type HttpResponse = hyper::Response<HyperOutgoingBody>;

/// What an HTTP guest's request ended as, once the guest has finished with it
/// (which may be after the response head was sent).
pub type HttpFinish = tokio::task::JoinHandle<Outcome<()>>;

/// Serves one request with the HTTP guest `digest`; see
/// [`BurnCache::handle_http`](crate::BurnCache::handle_http).
pub(crate) async fn handle_http<B>(
    registry: &Arc<Registry>,
    digest: &Digest,
    request: hyper::Request<B>,
    limits: &Limits,
    request_id: &str,
) -> Result<(HttpResponse, HttpFinish), Error>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let started = Instant::now();
    let prepared = prepare(registry, digest, request, limits, request_id).await;
    let (sandbox, pre, request, out) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            let refused: Outcome<()> = Outcome::refused(&registry.counters, e, started);
            return Err(refused.result.expect_err("refused"));
        }
    };
    let (outparam, receiver, answer) = out;
    let finish = tokio::spawn(tracing::Instrument::in_current_span(sandbox.run(
        async move |sandbox| {
            let proxy = pre
                .instantiate_async(&mut sandbox.store)
                .await
                .map_err(|e| sandbox.classify(e))?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut sandbox.store, request, outparam)
                .await
                .map_err(|e| sandbox.classify(e))?;
            // The guest returned: it must have answered with a response.
            match &*answer.lock().unwrap_or_else(PoisonError::into_inner) {
                Answer::Response => Ok(()),
                Answer::Error(code) => Err(Error::Guest(format!(
                    "the guest answered with an error: {code}"
                ))),
                Answer::None => Err(Error::Guest(
                    "the guest returned without setting a response".to_string(),
                )),
            }
        },
    )));
    match receiver.await {
        Ok(Ok(response)) => Ok((response, finish)),
        // The guest answered with an error code, or not at all: the task says
        // which, as the failure it counted.
        Ok(Err(_)) | Err(_) => match finish.await {
            Ok(Outcome { result: Err(e), .. }) => Err(e),
            Ok(Outcome { result: Ok(()), .. }) => Err(Error::Guest(
                "the guest returned without setting a response".to_string(),
            )),
            Err(e) => Err(Error::Backend(format!("the request task failed: {e}"))),
        },
    }
}

/// What the guest answered through its response outparam, as the host saw it.
enum Answer {
    None,
    Response,
    Error(String),
}

type Prepared = (
    Sandbox,
    ProxyPre<CallState>,
    Resource<HostIncomingRequest>,
    (
        Resource<HostResponseOutparam>,
        oneshot::Receiver<Result<HttpResponse, ErrorCode>>,
        Arc<Mutex<Answer>>,
    ),
);

/// Everything up to the guest's start: the component, its sandbox, and the request
/// and response handed into it.
async fn prepare<B>(
    registry: &Arc<Registry>,
    digest: &Digest,
    request: hyper::Request<B>,
    limits: &Limits,
    request_id: &str,
) -> Result<Prepared, Error>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let compiled = registry.lookup(digest, None).await.result?;
    let Some(pre) = compiled.proxy.clone() else {
        if compiled.script.is_some() {
            return Err(Error::InvalidInput(format!(
                "{digest} is a JavaScript script, which is called as a function \
                 (POST /v1/components/{digest}/call), not served as wasi:http"
            )));
        }
        return Err(Error::InvalidInput(format!(
            "component {digest} does not export `wasi:http/incoming-handler`, so it \
             cannot serve HTTP"
        )));
    };
    let host: Arc<dyn Host> = registry.clone();
    let mut sandbox = Sandbox::new(Scope::top(host, limits), Grants::Log { request_id })?;
    let (sender, receiver) = oneshot::channel();
    let answer = Arc::new(Mutex::new(Answer::None));
    let seen = answer.clone();
    let send = move |response: Result<HttpResponse, ErrorCode>| {
        *seen.lock().unwrap_or_else(PoisonError::into_inner) = match &response {
            Ok(_) => Answer::Response,
            Err(code) => Answer::Error(format!("{code:?}")),
        };
        // The caller may have gone; the guest's work is counted all the same.
        let _ = sender.send(response);
    };
    let state = sandbox.store.data_mut();
    let passed = state
        .http()
        .new_incoming_request(Scheme::Http, request)
        .and_then(|request| {
            let outparam = state.http().new_response_outparam_from_callback(send)?;
            Ok((request, outparam))
        });
    let (request, outparam) =
        passed.map_err(|e| Error::InvalidInput(format!("cannot pass the request on: {e:#}")))?;
    Ok((sandbox, pre, request, (outparam, receiver, answer)))
}
