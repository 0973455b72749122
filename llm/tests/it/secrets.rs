//! The API key never appears in Debug or Display output, logs' fields or errors.

use crate::support::{KEY, builder, config, provider, request, server, step};
use cf_llm::{AnthropicConfigError, AnthropicProvider, ApiKey, CallContext, Ledger, Provider};
use cf_mock_llm::Fault;
use std::time::Duration;

#[tokio::test]
async fn the_key_never_appears_in_debug_display_or_errors() {
    let server = server(Duration::ZERO).await;
    let config = config(&server);
    let provider = provider(&server);
    let service = builder(&server)
        .attempt_timeout(Duration::from_millis(300))
        .max_retries(0)
        .build();
    let mut texts = vec![
        format!("{:?}", config),
        format!("{:?}", config.api_key),
        format!("{}", config.api_key),
        format!("{:?}", provider),
        format!("{:?}", service),
    ];
    server.push_faults([
        Fault::unauthorized(),
        Fault::invalid_request("bad"),
        Fault::server_error(),
        Fault::rate_limited(1),
        Fault::Reset,
        Fault::Hang(Duration::from_secs(3)),
        Fault::Malformed,
        Fault::EmptyContent,
        Fault::Oversized(10 * 1024 * 1024),
    ]);
    let ledger = Ledger::unlimited();
    for _ in 0..9 {
        match step(
            "a failing call",
            Duration::from_secs(5),
            service.complete(&CallContext::new("a", &ledger), request("hi")),
        )
        .await
        {
            Ok(done) => texts.push(format!("{done:?}")),
            Err(e) => texts.extend([format!("{e:?}"), format!("{e}")]),
        }
    }
    assert_eq!(server.pending_faults(), 0);
    let direct = step(
        "a direct attempt",
        Duration::from_secs(5),
        provider.send(&request("hi")),
    )
    .await;
    texts.push(format!("{direct:?}"));
    let bad_key = AnthropicProvider::new(cf_llm::AnthropicConfig::new(
        server.base_url(),
        ApiKey::new(format!("{KEY}\n")),
    ))
    .expect_err("invalid");
    assert!(matches!(bad_key, AnthropicConfigError::InvalidApiKey));
    texts.extend([format!("{bad_key:?}"), format!("{bad_key}")]);
    for text in &texts {
        assert!(!text.contains(KEY), "the key leaked: {text}");
        assert!(
            !text.contains("TEST-SECRET"),
            "part of the key leaked: {text}"
        );
    }
    assert!(
        server
            .received()
            .iter()
            .all(|r| r.header("x-api-key") == Some(KEY)),
        "the key was sent"
    );
}
