build-fp/lvm/lv_write.o: lvm/lv_write.c common/log.h lvm/lvm_change.h \
 lvm/lvm.h lvm/../chain/chain.h lvm/../chain/layer_io.h \
 lvm/../chain/layer_io.h
common/log.h:
lvm/lvm_change.h:
lvm/lvm.h:
lvm/../chain/chain.h:
lvm/../chain/layer_io.h:
lvm/../chain/layer_io.h:
