/*-------------------------------------------------------------------------
 *
 * trigger.h
 *		line_status_trigger(): the row trigger that checks phone numbers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef LINE_STATUS_TRIGGER_H
#define LINE_STATUS_TRIGGER_H

#include "fmgr.h"

#include "cache.h"

extern Datum line_status_trigger_impl(FunctionCallInfo fcinfo, LsCache *cache);

#endif							/* LINE_STATUS_TRIGGER_H */
