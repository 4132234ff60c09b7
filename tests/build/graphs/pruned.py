"""A graph whose maximal edges link() prunes: Gateway depends on Worker and
on Spare, but Gateway.link(Worker) keeps only Gateway -> Worker, so Spare is
not part of the graph that is built, served or deployed."""

from dynamo.sdk import api, depends, dynamo_endpoint, service


@service(dynamo={"namespace": "pruned"}, resources={"gpu": 1, "cpu": "500m", "memory": "256Mi"}, workers=3)
class Worker:
    @dynamo_endpoint()
    async def work(self, text: str):
        yield text.upper()


@service(dynamo={"namespace": "pruned"})
class Spare:
    @dynamo_endpoint()
    async def work(self, text: str):
        yield text


@service(dynamo={"namespace": "pruned"}, resources={"cpu": 2})
class Gateway:
    worker = depends(Worker)
    spare = depends(Spare)

    @api
    async def run(self, text: str):
        async for out in self.worker.work(text):
            yield out


Gateway.link(Worker)
