/*
 * clockshift: moves the wall clock of a process tree by a fixed number of seconds, for the
 * time-moved test run (scripts/test-time-moved). Preloaded with LD_PRELOAD; the offset comes from
 * CLOCKSHIFT_SECONDS. Only the wall clock moves (CLOCK_REALTIME and its variants, time(),
 * gettimeofday()); the monotonic clocks, and so every sleep and timed wait, stay true.
 *
 * Why not Debian's libfaketime (0.9.10): it offsets the monotonic clock too, so a Python thread's
 * timed wait (sem_clockwait on CLOCK_MONOTONIC, which it does not intercept) waits for the whole
 * offset; with FAKETIME_DONT_FAKE_MONOTONIC=1 its clock_nanosleep wrapper turns Python's absolute
 * monotonic deadlines into negative ones and time.sleep() fails with EINVAL.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long long offset_seconds;
static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_gettimeofday)(struct timeval *, void *);
static time_t (*real_time)(time_t *);

__attribute__((constructor)) static void clockshift_init(void) {
    const char *value = getenv("CLOCKSHIFT_SECONDS");
    offset_seconds = value ? atoll(value) : 0;
    real_clock_gettime = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    real_gettimeofday = (int (*)(struct timeval *, void *))dlsym(RTLD_NEXT, "gettimeofday");
    real_time = (time_t(*)(time_t *))dlsym(RTLD_NEXT, "time");
}

static int is_wall_clock(clockid_t id) {
    return id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE || id == CLOCK_TAI;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    if (!real_clock_gettime) clockshift_init();
    int result = real_clock_gettime(id, ts);
    if (result == 0 && ts && is_wall_clock(id)) ts->tv_sec += offset_seconds;
    return result;
}

int gettimeofday(struct timeval *tv, void *tz) {
    if (!real_gettimeofday) clockshift_init();
    int result = real_gettimeofday(tv, tz);
    if (result == 0 && tv) tv->tv_sec += offset_seconds;
    return result;
}

time_t time(time_t *out) {
    if (!real_time) clockshift_init();
    time_t now = real_time(NULL) + offset_seconds;
    if (out) *out = now;
    return now;
}
