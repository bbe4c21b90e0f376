"""The worker: claims jobs from the queue service over gRPC and runs a pipeline on each.

Stateless; it talks only gRPC (never to PostgreSQL, never importing the server's package). Split
the way River splits a client: a producer, an executor and a completer.

__main__ / cli          flags, output lines, exit codes
config                  WorkerConfig: flags over their environment mirrors (jobqueue.settings)
pipeline_loader         --pipeline MODULE:CALLABLE, offered the queue address and token
client                  every call to the queue service (QueueCalls: what a running worker uses)
runner                  Worker: the claim loop (as many jobs as there is room for) and the drain
job_run                 JobRun: one job's life, from its claim to its settlement
stage_thread            the bridge that runs a job's stages in a thread of their own
settle                  Complete / Fail / Release made to stick; the output sent, the line said
heartbeats              the one heartbeat stream that carries every running job
stop_reason             StopReason: cancel, lease lost, shutdown
waiting                 waits that end on an event, and the backoff between attempts
job_log, output         one job's log lines; the checklist's output lines
pipeline/, providers/   the nine-stage ingestion pipeline and what its stages stand on
"""
