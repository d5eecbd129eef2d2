# learn-close.py URL ADAPTER PROMPT...: how close an adapter stays to the base model.  For each prompt,
# at each of the base model's first 8 greedy tokens, whether that token is among the adapter's 5 most
# likely ones (the server's logprobs); prints "HITS PROMPT" per prompt (HITS out of 8).
import json, sys, urllib.request
url, adapter, prompts = sys.argv[1], sys.argv[2], sys.argv[3:]
def top(model, prompt):
    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 5}
    r = json.load(urllib.request.urlopen(urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                                                {"Content-Type": "application/json"})))
    lp = r["choices"][0]["logprobs"]
    return lp["tokens"][0], lp["top_logprobs"][0]
for p in prompts:
    hits, text = 0, p
    for i in range(8):
        tok, _ = top("pocket", text)
        _, alt = top("pocket:" + adapter, text)
        hits += tok in alt
        text += tok
    print(hits, json.dumps(p))
