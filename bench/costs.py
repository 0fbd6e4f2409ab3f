"""results.md's sections on what parts of a request cost: each default, the instructions, the sign-in check."""

from report import floor_of, fmt, headline


def defaults_table(results: dict) -> list[str]:
    defaults, seconds = results["defaults"], results["config"]["seconds_per_run"]
    endpoint, connections = headline(results)
    rounds = next(iter(defaults.values()))["rounds"]
    out = [
        "## What each default costs, priced in one process",
        "",
        f"The baked service as shipped, GET {results['config']['endpoints'][endpoint]} at {connections} connections; "
        "a signal turns one default off and on again in the same process (bench/defaults.py), and each of "
        f"{rounds} rounds times it for {seconds:g} s with the default and {seconds:g} s without, in alternating "
        "order. Its share of a request: 1 - with/without in requests per second, and in CPU per request; median, "
        "with min-max.",
        "",
        "Its instructions: callgrind's count for the service as shipped less the same with the default off "
        "(`ACCESS_LOG=false`, `METRICS=false`), as in the instruction table below.",
        "",
        "| default | share of requests/s | share of CPU per request | CPU \u00b5s per request | instructions |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {"access_log": "the JSON access line (`ACCESS_LOG`)", "metrics": "counting for /metrics (`METRICS`)"}
    for name, default in defaults.items():
        rps, cpu, us = default["rps_share"], default["cpu_share"], default["cpu_us"]
        out.append(
            f"| {names.get(name, name)} | {rps['median']:.1%} ({rps['min']:.1%} to {rps['max']:.1%}) | "
            f"{cpu['median']:.1%} ({cpu['min']:.1%} to {cpu['max']:.1%}) | {fmt(us, 1)} | "
            f"{default['instructions']:,} ({default['instruction_share']:.1%}) |"
        )
    return out


def instructions_table(results: dict) -> list[str]:
    counted, labels = results["instructions"], results["contenders"]
    endpoint, _ = headline(results)
    per_request = counted["endpoints"][endpoint]["per_request"]
    out = [
        f"## Instructions per request: GET {counted['endpoints'][endpoint]['path']}, "
        f"{counted['concurrency']} at a time",
        "",
        "Counted by callgrind with the app driven in-process (no uvicorn, HTTP or wrk), so the same on every run: "
        f"{counted['requests']:,} requests after a warm-up of {counted['warmup']:,}, in one process each.",
        "",
        "| contender | instructions/request | baked vs it | vs floor |",
        "|---|---:|---:|---:|",
    ]
    for name, label in labels.items():
        if name in per_request:
            versus = f"{per_request[name] / per_request['baked']:.3f}x" if name != "baked" else "—"
            lowest = floor_of(results)
            floor = f"{per_request[name] / per_request[lowest]:.2f}x" if lowest in per_request else "—"
            out.append(f"| {label} | {per_request[name]:,} | {versus} | {floor} |")
    if len(counted["endpoints"]) > 1:
        out += [
            "",
            "Every endpoint, thousands of instructions per request (baked vs it in brackets):",
            "",
            "| endpoint | " + " | ".join(labels.values()) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        for measured in counted["endpoints"].values():
            counts = measured["per_request"]
            out.append(
                f"| `{measured['path']}` | "
                + " | ".join(
                    f"{counts[n] / 1000:,.0f}k" + (f" ({counts[n] / counts['baked']:.2f}x)" if n != "baked" else "")
                    for n in labels
                )
                + " |"
            )
    return out


def sign_in_lines(results: dict) -> list[str]:
    sign_in = results["sign_in"]
    counted = sign_in["instructions"]
    return [
        "## The sign-in check",
        "",
        f"Every request to the baked service carries an admin's token (from its own admin command and POST "
        f"/auth/token); the other contenders get the same header and ignore it. What checking it costs, on GET "
        f"{sign_in['path']} at {sign_in['concurrency']} at a time: {sign_in['check_instructions']:,} instructions "
        f"a request ({counted['signed_in']:,} signed in against {counted['public']:,} with the route made public), "
        f"**{sign_in['check_share']:.1%}** of the request; {sign_in['check_us']} \u00b5s timed in-process, "
        f"{sign_in['first_check_us']} \u00b5s for a token the process sees for the first time (its signature "
        "checked; after that it is remembered). "
        f"A password hash (argon2id, {sign_in['argon2']}) takes {sign_in['argon2_hash_ms']} ms and a check "
        f"{sign_in['argon2_verify_ms']} ms, on the password threads, at sign-up and sign-in only.",
    ]
