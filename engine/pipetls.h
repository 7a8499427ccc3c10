/*
 * pipetls.h - public interface of the "pipetls" OpenSSL ENGINE.
 *
 * Load order (as for every ENGINE):
 *   e = ENGINE_by_id("dynamic");  SO_PATH=<path>/pipetls.so, ID=pipetls, LOAD
 *   ENGINE_ctrl_cmd_string(e, "THREADS", "4", 0);      optional
 *   ENGINE_init(e);  ENGINE_set_default_ciphers(e);    process-wide
 *
 * From the openssl CLI:  openssl s_server -engine /path/pipetls.so ...
 * From openssl.cnf:      see README.md ("pipetls config").
 *
 * The engine is built from this folder (the ENGINE front) and core/ (lanes,
 * statistics, record code; see docs/architecture.md).
 *
 * Errors: every failure leaves a reason of the "pipetls" error library on
 * the calling thread's OpenSSL error queue (ERR_lib_error_string() gives
 * "pipetls"; the detail, e.g. "record 3 of 8 (16408 bytes)", is the error's
 * data). Plain EVP use outside a TLS record (TLS 1.3, PEM, ...) is OpenSSL's
 * own cipher and fails exactly as it does.
 *
 * CBC batches (AES-CBC under Encrypt-then-MAC, the stitched CBC-HMAC
 * ciphers): when encrypting, EVERY record of a pipelined batch starts from
 * the context's IV, not from the previous record's last ciphertext block.
 * That is safe only because TLS 1.1 and later put a random block (the
 * explicit IV, RFC 4346 6.2.3.2) in front of every record, which libssl
 * fills; a caller without such a block must not encrypt CBC in batches.
 * Decrypting, record i starts from record i-1's last ciphertext block (the
 * same answer as one record at a time). After a batch the context's IV is
 * the last ciphertext block, as after OpenSSL's own CBC.
 */
#ifndef PIPETLS_H
#define PIPETLS_H

#include <openssl/engine.h>

#define PIPETLS_ENGINE_ID "pipetls"
#define PIPETLS_ENGINE_NAME "pipetls: parallel TLS record pipelining"

/* Largest batch libssl can hand us (SSL_MAX_PIPELINES). */
#define PIPETLS_MAX_PIPES 32
/* Most lanes (threads working one batch, the caller included). */
#define PIPETLS_MAX_LANES 256

/*
 * Control commands. Names are what ENGINE_ctrl_cmd_string() and
 * "-pre NAME:VALUE" / openssl.cnf take; numbers are for ENGINE_ctrl().
 *
 *  THREADS        numeric 1..256: lanes working one batch, the calling thread
 *                 included (so THREADS-1 worker threads). Default: online CPUs.
 *                 May be changed at any time; the pool is rebuilt lazily.
 *  INLINE_BELOW   numeric 0..1073741824: batches whose total size is below this
 *                 many bytes run in the calling thread alone. Default 16384.
 *  STATS          ENGINE_ctrl(e, PIPETLS_CMD_STATS, len, char *buf, NULL)
 *                 writes the counters as text ("key value" lines, see below)
 *                 into buf and returns the length of the full text (which may
 *                 exceed len-1: then it was truncated). Through
 *                 ENGINE_ctrl_cmd_string (no buffer) it prints them to stderr.
 *  RESET_STATS    no input: zero all counters.
 *  STATS_FILE     string: when the engine is unloaded, append the counters to
 *                 this file ("-" or "stderr" for standard error). The
 *                 environment variable PIPETLS_STATS does the same.
 *  INFO           like STATS, but writes a description of the engine: version,
 *                 lanes, and the ciphers it offers on this CPU.
 *  CBC_HMAC_MODE  string auto | stitched | multiblock (default auto): how a
 *                 batch of the stitched CBC-HMAC ciphers is encrypted.
 *                 stitched: one record at a time per lane (bit-exact with
 *                 OpenSSL's TLS record mode); multiblock: consecutive records
 *                 of equal size (1 KiB and more) in groups of eight or four
 *                 per lane with OpenSSL's MULTIBLOCK code (random explicit
 *                 IVs of its own), eights where every lane still gets one;
 *                 auto: per batch, whichever of the two finishes first on
 *                 the lanes a batch gets, from per-record costs measured once
 *                 per cipher on this CPU (INFO shows them). Decryption is
 *                 always one record at a time.
 *  MULTIBLOCK     numeric 0 or 1: CBC_HMAC_MODE stitched (0) or multiblock
 *                 (1), the command of earlier versions.
 *  ADAPTIVE       numeric 0 or 1 (default 1): a worker takes records of a
 *                 batch only where it adds parallelism. Callers that called
 *                 in during the last millisecond or so plus workers busy now
 *                 are kept within CPUS; a caller that finds every core busy
 *                 keeps its batch and runs it inline (batches_kept), a batch
 *                 goes out with no more slots than free cores
 *                 (batches_narrowed), and idle workers do not spin on a core
 *                 a caller needs. Batches sent out are timed against their
 *                 caller's own pace; when recent ones gained nothing (cores
 *                 busy with other processes) the callers keep theirs for a
 *                 few milliseconds up to some 50 ms (kept_no_gain, backoffs).
 *                 A caller preempted again and again (3 involuntary
 *                 context switches in each of two ~11 ms samples), or a
 *                 worker getting under 4/5 of a CPU while it runs, means
 *                 other threads want the cores: callers keep their batches
 *                 and workers do not spin for 22 ms, doubling up to 180 ms
 *                 while it lasts (spin_stops). A batch that stalled on a
 *                 lane that was not running keeps them for 32 times the
 *                 time it lost (stalls).
 *                 0: every batch of INLINE_BELOW bytes or more goes to the
 *                 lanes, as many as THREADS.
 *  CPUS           numeric 0..256 (default 0): the cores ADAPTIVE may keep
 *                 busy; 0: the online CPUs the process may run on (its
 *                 affinity mask), re-read every quarter second or so.
 *  ASYNC          numeric 0, 1 or 2 (default 2; the environment variable
 *                 PIPETLS_ASYNC, read when the engine is bound, sets the
 *                 default): inside an OpenSSL ASYNC job (SSL_MODE_ASYNC), a
 *                 pipelined batch that finds the lanes free is handed to them
 *                 and the job pauses (docs/async.md): 2 for encrypt and
 *                 decrypt batches, 1 for encrypt batches only (for
 *                 applications that resume a paused read only when the
 *                 socket is readable, as openssl s_client does), 0 never.
 *  OUT_OF_PLACE   numeric 0 or 1 (default 1): with the patched libssl
 *                 (openssl_patches/0004), the AES-GCM and ChaCha20-Poly1305
 *                 ciphers (EVP_CIPH_FLAG_PIPELINE_PLAINTEXT) take the
 *                 plaintext of each record of a pipelined write from the
 *                 caller's buffer (EVP_CTRL_SET_PIPELINE_PLAINTEXT_BUFS;
 *                 not inside an ASYNC job that may pause), so that the lanes
 *                 copy it into the records (plaintext_records); 0: they
 *                 refuse it and libssl copies the plaintext first, serially,
 *                 as stock libssl does. Stock libssl never asks.
 */
#define PIPETLS_CMD_THREADS (ENGINE_CMD_BASE + 0)
#define PIPETLS_CMD_INLINE_BELOW (ENGINE_CMD_BASE + 1)
#define PIPETLS_CMD_STATS (ENGINE_CMD_BASE + 2)
#define PIPETLS_CMD_RESET_STATS (ENGINE_CMD_BASE + 3)
#define PIPETLS_CMD_STATS_FILE (ENGINE_CMD_BASE + 4)
#define PIPETLS_CMD_INFO (ENGINE_CMD_BASE + 5)
#define PIPETLS_CMD_MULTIBLOCK (ENGINE_CMD_BASE + 6)
#define PIPETLS_CMD_CBC_HMAC_MODE (ENGINE_CMD_BASE + 7)
#define PIPETLS_CMD_ADAPTIVE (ENGINE_CMD_BASE + 8)
#define PIPETLS_CMD_CPUS (ENGINE_CMD_BASE + 9)
#define PIPETLS_CMD_ASYNC (ENGINE_CMD_BASE + 10)
#define PIPETLS_CMD_OUT_OF_PLACE (ENGINE_CMD_BASE + 11)

/*
 * Statistics text, one "key value" pair per line:
 *   pipetls.stats 1           format version
 *   lanes N                   lanes configured (caller included)
 *   workers N                 worker threads running now
 *   inline_below N
 *   worker_start_failures N   worker threads that could not be started
 *                             (pthread_create failed); after a failure the
 *                             batches run in their callers and no start is
 *                             tried again until THREADS changes
 *   adaptive 0|1              ADAPTIVE
 *   cpus N                    the cores ADAPTIVE keeps busy at most (CPUS,
 *                             or the online CPUs as last read)
 *   batches N                 cipher calls that carried >= 1 TLS record
 *   pipelined_batches N       ... of which more than one record
 *   inline_batches N          ... of which run by the caller alone
 *   records N
 *   bytes N                   record bytes processed (input lengths)
 *   failed_batches N          batches that failed (bad tag/MAC, bad input)
 *   crypto_ns N               time inside record crypto, summed over lanes
 *   batch_ns N                wall time of batches, as seen by the callers
 *   stream_calls N            plain EVP calls forwarded to OpenSSL's cipher
 *                             (not a TLS 1.2 record: TLS 1.3 records, PEM, ...)
 *   stream_bytes N            ... and their input bytes
 *   plaintext_records N       records encrypted out of place: the lanes read
 *                             their plaintext from the caller's buffer (the
 *                             patched libssl's EVP_CTRL_SET_PIPELINE_PLAINTEXT_BUFS)
 *   contiguous_records N      records of pipelined decryptions (the provider)
 *                             written back to back into one buffer: the
 *                             patched libssl decrypting into the reader's
 *                             buffer (patch 0006)
 *   wake_calls N              futex wakes of sleeping workers by callers
 *   worker_sleeps N           times an idle worker went to sleep
 *   caller_sleeps N           times a caller slept waiting for its batch
 *   caller_wakes N            futex wakes of a sleeping caller by the last
 *                             worker of its batch
 *   cbc_hmac_stitched N       CBC-HMAC TLS records encrypted one at a time
 *                             (batches of one record included)
 *   cbc_hmac_mb4 N            ... in MULTIBLOCK groups of four
 *   cbc_hmac_mb8 N            ... in MULTIBLOCK groups of eight
 *   batches_kept N            batches of INLINE_BELOW bytes or more that
 *                             their caller ran alone because every core was
 *                             busy (ADAPTIVE; counted in inline_batches too)
 *   records_kept N            ... their records
 *   kept_busy_callers N       ... kept because callers alone filled the CPUs
 *   kept_busy_workers N       ... kept because callers and busy workers did
 *   kept_no_gain N            ... kept because recent batches on the lanes
 *                             were no faster than their callers alone
 *   batches_narrowed N        batches that went out with fewer lane slots
 *                             than prepared: fewer free cores than lanes
 *   worker_declines N         times a worker left a batch alone: callers
 *                             and busy workers already filled the CPUs
 *   backoffs N                times batches on the lanes were found to gain
 *                             nothing (the callers then keep theirs a while)
 *   spin_stops N              times the cores were found wanted by other
 *                             threads (callers keep their batches a while)
 *   stalls N                  batches that stalled on a lane that was not
 *                             running (callers keep theirs a while)
 *   caller_wait_ns N          time callers waited for workers after their
 *                             own claims of a batch ran out
 *   async_batches N           batches inside an OpenSSL ASYNC job
 *                             (SSL_MODE_ASYNC) handed to the lanes alone,
 *                             the job paused meanwhile (docs/async.md)
 *   async_pauses N            ASYNC_pause_job calls for them
 *   async_resumes N           ... after which the application resumed the
 *                             job (fewer: jobs abandoned while paused)
 *   async_paused_ns N         time from a job's first pause to its batch's
 *                             end, summed
 *   hist.K N                  batches of K records (K = 1..32; zero rows omitted)
 *   lane.I.records N          records done by lane I (0 = calling threads)
 *   lane.I.bytes N
 *   lane.I.crypto_ns N        time lane I spent in record crypto
 * INFO text uses the same form: "version X", "openssl X", the lanes,
 * workers, inline_below, worker_start_failures, adaptive and cpus lines
 * above, "multiblock 0|1" (1 unless CBC_HMAC_MODE is stitched),
 * "cbc_hmac_mode auto|stitched|multiblock", "async 0|1|2" (ASYNC), one "cipher NAME" line per cipher offered, and
 * for each stitched CBC-HMAC cipher "cbc_hmac_cost.NAME
 * stitched:S,mb4:F,mb8:1.000" (per-record cost of each way, an 8-group's
 * record = 1, as measured on this CPU) or "cbc_hmac_cost.NAME unmeasured".
 */

#endif
