"""Example worker: counts the words of a text given as the input field ``text``.

    JOB_MANAGER_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f python examples/word_count.py
"""

import logging

from job_manager_worker import worker


@worker("word-count")
def word_count(inputs, configs, task):
    text = str(inputs.get("text", ""))
    if configs.get("lowercase"):
        text = text.lower()
    words = text.split()
    task.log("counted %d words" % len(words))
    return {"words": len(words), "distinct": len(set(words))}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    word_count.run()
