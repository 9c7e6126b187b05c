//! HTTP guests: one request served by a `wasi:http/proxy` component in a fresh Store,
//! the way `wasmtime serve` serves one, under the same ceilings as any call.

use std::sync::Arc;
use std::time::Instant;

use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiBody, WasiHttpHooks};

use crate::call::{Outcome, Sandbox, Scope};
use crate::output::GuestLog;
use crate::{BurnCache, Digest, Error, Limits};

/// A response from an HTTP guest. Its body may still be streaming from the guest.
pub type HttpResponse = hyper::Response<HyperOutgoingBody>;

/// What an HTTP guest's request ended as, once the guest has finished with it
/// (which may be after the response head was sent).
pub type HttpFinish = tokio::task::JoinHandle<Outcome<()>>;

/// Outgoing HTTP from guests is refused: a sealed guest has no network.
pub(crate) struct SealedHttp;

impl WasiHttpHooks for SealedHttp {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl BurnCache {
    /// Serves one request with the HTTP guest `digest` (a component exporting
    /// `wasi:http/incoming-handler`): a fresh instance, the ceilings of `limits`,
    /// a sealed WASI context whose stdout and stderr go to the log under
    /// `request_id`, and no outgoing network.
    ///
    /// Returns the response as soon as the guest sets it, and a handle that resolves
    /// when the guest has finished (its body written), with the fuel it burned.
    ///
    /// # Errors
    ///
    /// `NotFound`, the component's compile failure, `InvalidInput` when it is not
    /// an HTTP guest, or what the guest ran into before it set a response
    /// (`Timeout`, `FuelExhausted`, `MemoryLimit`, `Trap`, ...).
    pub async fn handle_http<B>(
        &self,
        digest: &Digest,
        request: hyper::Request<B>,
        limits: &Limits,
        request_id: u64,
    ) -> Result<(HttpResponse, HttpFinish), Error>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let compiled = self.lookup(digest).await?;
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
        let scope = Scope::top(self, limits);
        let wasi = http_wasi(request_id);
        let mut sandbox = Sandbox::new(scope, Some(wasi))?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let state = sandbox.store.data_mut();
        let passed = state
            .http()
            .new_incoming_request(Scheme::Http, request)
            .and_then(|request| Ok((request, state.http().new_response_outparam(sender)?)));
        let (request, out) = passed
            .map_err(|e| Error::InvalidInput(format!("cannot pass the request on: {e:#}")))?;
        let deadline = tokio::time::Instant::from_std(sandbox.deadline());
        let inner = Arc::clone(&self.inner);
        let started = Instant::now();
        let finish = tokio::spawn(async move {
            let handled = async {
                let proxy = pre
                    .instantiate_async(&mut sandbox.store)
                    .await
                    .map_err(|e| sandbox.classify(e))?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut sandbox.store, request, out)
                    .await
                    .map_err(|e| sandbox.classify(e))
            };
            let result = tokio::time::timeout_at(deadline, handled)
                .await
                .unwrap_or(Err(Error::Timeout));
            inner.counters.record_call(&result);
            let fuel_burned = sandbox.fuel_burned();
            inner.counters.add_fuel(fuel_burned);
            Outcome {
                result,
                fuel_burned,
                elapsed: started.elapsed(),
            }
        });
        match receiver.await {
            Ok(Ok(response)) => Ok((response, finish)),
            Ok(Err(code)) => {
                let _ = finish.await;
                Err(Error::Guest(format!(
                    "the guest answered with an error: {}",
                    describe(&code)
                )))
            }
            // The guest dropped the response without setting it: the task says why.
            Err(_) => match finish.await {
                Ok(Outcome { result: Err(e), .. }) => Err(e),
                Ok(Outcome { result: Ok(()), .. }) => Err(Error::Guest(
                    "the guest returned without setting a response".to_string(),
                )),
                Err(e) => Err(Error::Backend(format!("the request task failed: {e}"))),
            },
        }
    }
}

fn describe(code: &ErrorCode) -> String {
    format!("{code:?}")
}

/// A sealed WASI context whose stdout and stderr go to the log (for `wstd` and
/// other SDKs whose HTTP servers also import `wasi:cli`).
fn http_wasi(request_id: u64) -> WasiCtx {
    WasiCtx::builder()
        .stdout(GuestLog::new(request_id, "stdout"))
        .stderr(GuestLog::new(request_id, "stderr"))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}
