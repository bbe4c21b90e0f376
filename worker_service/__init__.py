"""The worker: claims jobs from the queue service over gRPC and runs a pipeline on each.

Stateless; it talks only gRPC (never to PostgreSQL, never importing the server's package). Split
the way River splits a client: a producer, an executor and a completer.

__main__ / cli          flags, output lines, exit codes
config                  WorkerConfig: flags over their environment mirrors (jobqueue.settings)
pipeline_loader         --pipeline MODULE:CALLABLE, offered the queue address and token
client                  every call to the queue service (QueueCalls: what a running worker uses)
runner                  Worker: the claim loop (the room it has, and more when jobs are short)
                        and the drain
job_run                 JobRun: one job's life, from its claim to its settlement
stage_thread            StagePool: the --concurrency threads that run claimed jobs in order
settle                  Complete / Fail / Release made to stick, batched; the output sent
heartbeats              the one heartbeat stream that carries every job the worker holds
stop_reason             StopReason: cancel, lease lost, shutdown
waiting                 waits that end on an event, and the backoff between attempts
job_log, output         one job's log lines; the checklist's output lines
printer                 stdout, written in bulk
pipeline/, providers/   the nine-stage ingestion pipeline and what its stages stand on
"""
