"""Regenerate data/{train,val}.jsonl: labelled customer-service utterances (English and Chinese).

The utterances are written from templates and slot values with a fixed seed, so
the shipped files are reproducible: ``python make_dataset.py``. Validation
examples use phrasings held out of training.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

ITEMS_EN = [
    "order",
    "package",
    "parcel",
    "headphones",
    "laptop",
    "jacket",
    "phone case",
    "shoes",
    "coffee machine",
]
ITEMS_ZH = ["订单", "包裹", "快递", "耳机", "笔记本电脑", "外套", "手机壳", "鞋子", "咖啡机"]
NUMS = ["#10293", "#55821", "A-7731", "20391", "#88812", "B-1204"]

TEMPLATES: dict[str, dict[str, list[str]]] = {
    "order_status": {
        "en": [
            "where is my {item}",
            "has my {item} shipped yet",
            "can you track order {num} for me",
            "my {item} still hasn't arrived",
            "what is the status of order {num}",
            "when will my {item} be delivered",
            "tracking for {num} shows nothing, where is it",
            "is my {item} on the way",
        ],
        "zh": [
            "我的{item}到哪里了",
            "{item}发货了吗",
            "帮我查一下订单{num}",
            "我的{item}还没到",
            "订单{num}现在是什么状态",
            "{item}什么时候能送到",
            "物流信息一直没更新,{item}在哪",
            "我的{item}在路上了吗",
        ],
    },
    "refund": {
        "en": [
            "i want a refund for my {item}",
            "how do i get my money back for {num}",
            "please refund order {num}",
            "the {item} is broken, i want a refund",
            "when will i receive my refund",
            "can i return the {item} and get a refund",
            "refund the {item} to my card please",
            "i was charged but want my money back",
        ],
        "zh": [
            "我要给{item}申请退款",
            "订单{num}怎么退钱",
            "请帮我把订单{num}退款",
            "{item}坏了,我要退款",
            "退款什么时候到账",
            "{item}可以退货退款吗",
            "请把{item}的钱退回我的卡里",
            "扣了钱但我想要退款",
        ],
    },
    "cancel_order": {
        "en": [
            "cancel my order {num}",
            "i want to cancel the {item}",
            "please cancel my order before it ships",
            "i changed my mind, cancel the {item} order",
            "how can i cancel order {num}",
            "stop my order for the {item}",
            "i ordered the {item} by mistake, cancel it",
            "cancel everything i ordered today",
        ],
        "zh": [
            "取消我的订单{num}",
            "我想取消{item}",
            "发货前请帮我取消订单",
            "我改主意了,取消{item}的订单",
            "订单{num}怎么取消",
            "{item}的订单不要了",
            "{item}下错单了,帮我取消",
            "把我今天下的单都取消",
        ],
    },
    "change_address": {
        "en": [
            "i need to change the delivery address for {num}",
            "can you ship the {item} to a different address",
            "update my shipping address please",
            "i moved, change the address on my {item} order",
            "wrong address on order {num}",
            "send the {item} to my office instead",
            "how do i edit my delivery address",
            "change where my {item} gets delivered",
        ],
        "zh": [
            "订单{num}的收货地址要改一下",
            "{item}能寄到另一个地址吗",
            "请帮我更新收货地址",
            "我搬家了,改一下{item}订单的地址",
            "订单{num}地址填错了",
            "{item}改寄到我公司",
            "怎么修改收货地址",
            "改一下{item}的配送地址",
        ],
    },
    "payment_issue": {
        "en": [
            "my card was declined",
            "payment failed for the {item}",
            "i was charged twice for order {num}",
            "why can't i pay with my credit card",
            "the checkout keeps failing at payment",
            "there is a wrong charge on my card for {num}",
            "paypal payment for the {item} did not go through",
            "i paid but the order {num} says unpaid",
        ],
        "zh": [
            "我的银行卡被拒了",
            "{item}付款失败",
            "订单{num}被扣了两次钱",
            "为什么信用卡付不了款",
            "结账的时候一直支付失败",
            "订单{num}的扣款金额不对",
            "用支付宝买{item}没有付成功",
            "我已经付款了但订单{num}显示未支付",
        ],
    },
    "account_login": {
        "en": [
            "i can't log in to my account",
            "forgot my password",
            "how do i reset my password",
            "my account is locked",
            "the verification code never arrives",
            "i can't sign in on the app",
            "help me recover my account",
            "login says my password is wrong",
        ],
        "zh": [
            "我登录不了账号",
            "忘记密码了",
            "怎么重置密码",
            "我的账号被锁了",
            "一直收不到验证码",
            "手机应用上登不进去",
            "帮我找回账号",
            "登录提示密码错误",
        ],
    },
    "product_question": {
        "en": [
            "is the {item} in stock",
            "what sizes does the {item} come in",
            "does the {item} have a warranty",
            "what colors are available for the {item}",
            "is the {item} waterproof",
            "when will the {item} be back in stock",
            "tell me more about the {item}",
            "how long does the {item} battery last",
        ],
        "zh": [
            "{item}有货吗",
            "{item}有哪些尺码",
            "{item}有保修吗",
            "{item}有什么颜色",
            "{item}防水吗",
            "{item}什么时候补货",
            "介绍一下这款{item}",
            "{item}的电池能用多久",
        ],
    },
    "human_agent": {
        "en": [
            "let me talk to a human",
            "i want to speak to an agent",
            "transfer me to a real person",
            "can i call customer service",
            "connect me to support staff",
            "this bot is useless, get me a person",
            "is there a phone number i can call",
            "i need a human to help with {num}",
        ],
        "zh": [
            "我要找人工客服",
            "转人工",
            "帮我转接真人",
            "可以打客服电话吗",
            "给我接客服人员",
            "机器人没用,我要人工",
            "有客服电话吗",
            "订单{num}我需要人工处理",
        ],
    },
}

PREFIX_EN = ["", "", "hi, ", "hello, ", "excuse me, ", "please, ", "hey "]
SUFFIX_EN = ["", "", "?", " please", " thanks", "!", " asap"]
PREFIX_ZH = ["", "", "你好,", "您好,", "请问", "麻烦", "在吗,"]
SUFFIX_ZH = ["", "", "?", "。", ",谢谢", "!", ",急"]


def _fill(template: str, lang: str, rng: random.Random) -> str:
    items = ITEMS_EN if lang == "en" else ITEMS_ZH
    text = template.format(item=rng.choice(items), num=rng.choice(NUMS))
    prefix, suffix = (PREFIX_EN, SUFFIX_EN) if lang == "en" else (PREFIX_ZH, SUFFIX_ZH)
    return rng.choice(prefix) + text + rng.choice(suffix)


def build(per_template: int = 6, seed: int = 7) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rng = random.Random(seed)  # noqa: S311 (reproducible data, not secrets)
    train: list[dict[str, str]] = []
    val: list[dict[str, str]] = []
    seen: set[str] = set()
    for intent, by_lang in TEMPLATES.items():
        for lang, templates in by_lang.items():
            for (index, template), _ in itertools.product(enumerate(templates), range(per_template)):
                text = _fill(template, lang, rng)
                if text in seen:
                    continue
                seen.add(text)
                # Each intent's last two phrasings per language are held out for
                # validation: the model must generalise to wordings it never saw.
                (val if index >= len(templates) - 2 else train).append(
                    {"text": text, "intent": intent, "lang": lang}
                )
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def main() -> None:
    train, val = build()
    folder = Path(__file__).resolve().parent / "data"
    folder.mkdir(exist_ok=True)
    for name, rows in (("train", train), ("val", val)):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"train: {len(train)} utterances, val: {len(val)} utterances, intents: {len(TEMPLATES)}")


if __name__ == "__main__":
    main()
