//! Backoff for queued loads that failed in a way a retry may fix.
//!
//! Lambda's SQS event source returns a failed batch to the queue, where its
//! messages wait out the queue's visibility timeout before they are received
//! again. That timeout must be six times the function's (90 minutes here), so
//! a Redshift blip would hold the batch's files back for an hour and a half.
//! Before the handler reports such a failure, it sets each message's
//! visibility to a backoff that grows with its receive count instead; the
//! queue's redrive policy still sends a message that keeps failing to the
//! dead-letter queue.

use aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry;

use crate::config::RetryBackoff;
use crate::events::{SqsEvent, SqsMessage};

/// The queue's name and account from its ARN
/// (`arn:aws:sqs:<region>:<account>:<name>`).
pub fn queue_of(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", _, account, name] if !account.is_empty() && !name.is_empty() => Some((name, account)),
        _ => None,
    }
}

/// Sets the visibility of every message of `event` to its backoff
/// ([`RetryBackoff::delay_seconds`] of its receive count). Returns how many
/// messages were changed, or what went wrong: the caller reports the load's
/// own failure either way.
pub async fn back_off_queued(
    sqs: &aws_sdk_sqs::Client,
    event: &SqsEvent,
    backoff: &RetryBackoff,
) -> Result<usize, String> {
    let mut by_queue: std::collections::BTreeMap<&str, Vec<&SqsMessage>> = Default::default();
    for message in &event.records {
        by_queue.entry(message.event_source_arn.as_str()).or_default().push(message);
    }
    let mut changed = 0;
    for (arn, messages) in by_queue {
        let (name, account) = queue_of(arn).ok_or_else(|| format!("not an SQS queue ARN: {arn:?}"))?;
        let url = sqs
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| format!("GetQueueUrl {name}: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?
            .queue_url
            .ok_or_else(|| format!("GetQueueUrl {name}: no URL"))?;
        // A batch changes at most 10 messages.
        for chunk in messages.chunks(10) {
            let entries = visibility_entries(chunk, backoff)?;
            let out =
                sqs.change_message_visibility_batch().queue_url(&url).set_entries(Some(entries)).send().await.map_err(
                    |e| format!("ChangeMessageVisibilityBatch: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)),
                )?;
            if let Some(failed) = out.failed().first() {
                return Err(format!(
                    "ChangeMessageVisibilityBatch: {} of {} failed, the first with {}: {}",
                    out.failed().len(),
                    chunk.len(),
                    failed.code(),
                    failed.message().unwrap_or_default()
                ));
            }
            changed += out.successful().len();
        }
    }
    Ok(changed)
}

/// One `ChangeMessageVisibilityBatch` entry per message, each hidden for
/// the backoff of its own receive count.
fn visibility_entries(
    messages: &[&SqsMessage],
    backoff: &RetryBackoff,
) -> Result<Vec<ChangeMessageVisibilityBatchRequestEntry>, String> {
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&m.receipt_handle)
                .visibility_timeout(backoff.delay_seconds(m.receive_count()) as i32)
                .build()
                .map_err(|e| format!("visibility entry: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_with_each_receive_up_to_its_cap() {
        let backoff = RetryBackoff::DEFAULT;
        let delays: Vec<u32> = (1..=7).map(|n| backoff.delay_seconds(n)).collect();
        assert_eq!(delays, [60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(backoff.delay_seconds(0), 60, "a count SQS did not give is a first receive");
        assert_eq!(backoff.delay_seconds(u32::MAX), 900, "no overflow");
        let seconds = RetryBackoff { base_seconds: 1, max_seconds: RetryBackoff::SQS_MAX_SECONDS };
        assert_eq!(seconds.delay_seconds(40), RetryBackoff::SQS_MAX_SECONDS);
    }

    #[test]
    fn a_queue_is_named_by_its_arn() {
        assert_eq!(
            queue_of("arn:aws:sqs:us-east-1:123456789012:tvetl-dev-load"),
            Some(("tvetl-dev-load", "123456789012"))
        );
        assert_eq!(queue_of("arn:aws-cn:sqs:cn-north-1:123456789012:q"), Some(("q", "123456789012")));
        assert_eq!(queue_of("arn:aws:sns:us-east-1:123456789012:topic"), None);
        assert_eq!(queue_of("tvetl-dev-load"), None);
    }

    #[test]
    fn the_receive_count_comes_from_the_event() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../infra/events/sqs-staging-created.json")).unwrap();
        assert!(event.records.iter().all(|m| m.receive_count() == 1 && !m.receipt_handle.is_empty()));
        assert_eq!(queue_of(&event.records[0].event_source_arn), Some(("tvetl-dev-load", "123456789012")));
        let mut again = event.records[0].clone();
        again.attributes.approximate_receive_count = Some("4".into());
        assert_eq!(RetryBackoff::DEFAULT.delay_seconds(again.receive_count()), 480);
    }

    #[test]
    fn each_message_is_hidden_for_the_backoff_of_its_own_receive_count() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../infra/events/sqs-staging-created.json")).unwrap();
        let (mut first, mut third) = (event.records[0].clone(), event.records[0].clone());
        first.receipt_handle = "handle-1".into();
        third.receipt_handle = "handle-3".into();
        third.attributes.approximate_receive_count = Some("3".into());
        let backoff = RetryBackoff { base_seconds: 2, max_seconds: 60 };
        let entries = visibility_entries(&[&first, &third], &backoff).unwrap();
        let got: Vec<(&str, &str, Option<i32>)> =
            entries.iter().map(|e| (e.id(), e.receipt_handle(), e.visibility_timeout())).collect();
        assert_eq!(got, [("0", "handle-1", Some(2)), ("1", "handle-3", Some(8))]);
    }
}
