/* dynamo/dynamo.h - everything in one include. */
#ifndef DYNAMO_DYNAMO_H
#define DYNAMO_DYNAMO_H

#include "dynamo/export.h"
#include "dynamo/status.h"
#include "dynamo/runtime.h"
#include "dynamo/server.h"
#include "dynamo/client.h"
#include "dynamo/events.h"
#include "dynamo/discovery.h"
#include "dynamo/control.h"
#include "dynamo/metrics.h"
#endif
