// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ILivepeerToken} from "./Interfaces.sol";
import {Manager} from "./Manager.sol";

/// @title BondingManager
/// @notice Bonding, a transcoder pool (kept sorted by stake, at most numActiveTranscoders),
/// per-round rewards and per-ticket fees.
/// @dev Deliberately small. Earnings use one running reward factor and one fee factor per
/// transcoder (fixed point, 1e27) rather than per-round earnings pools: a delegator's stake
/// grows by rewardFactor/snapshot and its fees by stake x (feeFactor - snapshot)/rewardFactor
/// snapshot. The transcoder's own commission accrues in cumulativeRewards / cumulativeFees
/// until it claims. The reward share of a round uses the transcoder's active stake for that
/// round against the round's total active stake; the distribution uses its live stake.
contract BondingManager is Manager {
    uint256 private constant PRECISE = 1e27;

    enum TranscoderStatus {
        NotRegistered,
        Registered
    }

    enum DelegatorStatus {
        Pending,
        Bonded,
        Unbonded
    }

    struct Transcoder {
        uint256 lastRewardRound;
        uint256 rewardCut;
        uint256 feeShare;
        uint256 lastActiveStakeUpdateRound;
        uint256 activationRound;
        uint256 deactivationRound;
        uint256 activeCumulativeRewards;
        uint256 cumulativeRewards;
        uint256 cumulativeFees;
        uint256 lastFeeRound;
        uint256 rewardFactor;
        uint256 feeFactor;
        uint256 prevActiveStake;
        uint256 nextActiveStake;
    }

    struct UnbondingLock {
        uint256 amount;
        uint256 withdrawRound;
    }

    struct Delegator {
        uint256 bondedAmount;
        uint256 fees;
        address delegateAddress;
        uint256 delegatedAmount;
        uint256 startRound;
        uint256 lastClaimRound;
        uint256 nextUnbondingLockId;
        uint256 rewardFactorSnapshot;
        uint256 feeFactorSnapshot;
        mapping(uint256 => UnbondingLock) unbondingLocks;
    }

    uint64 public unbondingPeriod;
    uint256 public numActiveTranscoders;
    uint256 public nextRoundTotalActiveStake;
    uint256 public currentRoundTotalActiveStake;

    mapping(address => Delegator) private delegators;
    mapping(address => Transcoder) private transcoders;
    address[] private pool;
    mapping(address => bool) private inPool;

    event TranscoderUpdate(address indexed transcoder, uint256 rewardCut, uint256 feeShare);
    event TranscoderActivated(address indexed transcoder, uint256 activationRound);
    event TranscoderDeactivated(address indexed transcoder, uint256 deactivationRound);
    event Reward(address indexed transcoder, uint256 amount);
    event Bond(
        address indexed newDelegate,
        address indexed oldDelegate,
        address indexed delegator,
        uint256 additionalAmount,
        uint256 bondedAmount
    );
    event Unbond(
        address indexed delegate,
        address indexed delegator,
        uint256 unbondingLockId,
        uint256 amount,
        uint256 withdrawRound
    );
    event Rebond(
        address indexed delegate,
        address indexed delegator,
        uint256 unbondingLockId,
        uint256 amount
    );
    event WithdrawStake(
        address indexed delegator,
        uint256 unbondingLockId,
        uint256 amount,
        uint256 withdrawRound
    );
    event WithdrawFees(address indexed delegator, address recipient, uint256 amount);

    modifier onlyTicketBroker() {
        require(msg.sender == _lookup("TicketBroker"), "caller must be TicketBroker");
        _;
    }

    modifier onlyRoundsManager() {
        require(msg.sender == _lookup("RoundsManager"), "caller must be RoundsManager");
        _;
    }

    constructor(address _controller) Manager(_controller) {}

    // ---- parameters -------------------------------------------------------------------

    function setUnbondingPeriod(uint64 _unbondingPeriod) external onlyControllerOwner {
        unbondingPeriod = _unbondingPeriod;
        emit ParameterUpdate("unbondingPeriod");
    }

    function setNumActiveTranscoders(uint256 _numActiveTranscoders) external onlyControllerOwner {
        require(_numActiveTranscoders >= pool.length, "new limit must be >= pool size");
        numActiveTranscoders = _numActiveTranscoders;
        emit ParameterUpdate("numActiveTranscoders");
    }

    // ---- transcoders ------------------------------------------------------------------

    function transcoder(uint256 _rewardCut, uint256 _feeShare) external {
        transcoderWithHint(_rewardCut, _feeShare, address(0), address(0));
    }

    function transcoderWithHint(uint256 _rewardCut, uint256 _feeShare, address, address)
        public
        whenSystemNotPaused
        whenRoundInitialized
    {
        require(!roundsManager().currentRoundLocked(), "can't update transcoder params, current round is locked");
        require(_rewardCut <= PERC_DIVISOR, "invalid rewardCut percentage");
        require(_feeShare <= PERC_DIVISOR, "invalid feeShare percentage");
        require(isRegisteredTranscoder(msg.sender), "transcoder must be registered");
        Transcoder storage t = transcoders[msg.sender];
        uint256 round = roundsManager().currentRound();
        require(
            !isActiveTranscoder(msg.sender) || t.lastRewardRound == round,
            "caller can't be active or must have already called reward for the current round"
        );
        t.rewardCut = _rewardCut;
        t.feeShare = _feeShare;
        if (!inPool[msg.sender]) {
            _tryToJoinActiveSet(msg.sender, round);
        }
        emit TranscoderUpdate(msg.sender, _rewardCut, _feeShare);
    }

    function reward() external {
        rewardWithHint(address(0), address(0));
    }

    function rewardWithHint(address, address)
        public
        whenSystemNotPaused
        whenRoundInitialized
    {
        uint256 round = roundsManager().currentRound();
        require(isActiveTranscoder(msg.sender), "caller must be an active transcoder");
        Transcoder storage t = transcoders[msg.sender];
        require(t.lastRewardRound != round, "caller has already called reward for the current round");

        uint256 rewardTokens = minter().createReward(
            _activeStake(t, round),
            currentRoundTotalActiveStake
        );
        uint256 oldStake = delegators[msg.sender].delegatedAmount;
        uint256 commission = (rewardTokens * t.rewardCut) / PERC_DIVISOR;
        uint256 delegatorsRewards = rewardTokens - commission;
        if (oldStake == 0) {
            t.cumulativeRewards += rewardTokens;
        } else {
            uint256 factor = _rewardFactor(t);
            t.rewardFactor = factor + (factor * delegatorsRewards) / oldStake;
            t.cumulativeRewards +=
                commission +
                (delegatorsRewards * t.cumulativeRewards) / oldStake;
        }
        t.activeCumulativeRewards = t.cumulativeRewards;
        t.lastRewardRound = round;
        delegators[msg.sender].delegatedAmount = oldStake + rewardTokens;
        _syncPool(msg.sender, oldStake, round);
        emit Reward(msg.sender, rewardTokens);
    }

    /// @notice Credit ticket fees to a transcoder's fee pool (TicketBroker only).
    function updateTranscoderWithFees(address _transcoder, uint256 _fees, uint256)
        external
        whenSystemNotPaused
        onlyTicketBroker
    {
        require(isRegisteredTranscoder(_transcoder), "transcoder must be registered");
        Transcoder storage t = transcoders[_transcoder];
        uint256 stake = delegators[_transcoder].delegatedAmount;
        uint256 delegatorsFees = (_fees * t.feeShare) / PERC_DIVISOR;
        uint256 commission = _fees - delegatorsFees;
        if (stake == 0) {
            t.cumulativeFees += _fees;
        } else {
            t.feeFactor += (_rewardFactor(t) * delegatorsFees) / stake;
            t.cumulativeFees += commission + (delegatorsFees * t.cumulativeRewards) / stake;
        }
        t.lastFeeRound = roundsManager().currentRound();
    }

    function setCurrentRoundTotalActiveStake() external onlyRoundsManager {
        currentRoundTotalActiveStake = nextRoundTotalActiveStake;
    }

    // ---- delegators -------------------------------------------------------------------

    function bond(uint256 _amount, address _to) external whenSystemNotPaused whenRoundInitialized {
        require(_to != address(0), "invalid delegate");
        uint256 round = roundsManager().currentRound();
        Delegator storage d = delegators[msg.sender];
        _claimEarnings(msg.sender, round);

        address current = d.delegateAddress;
        uint256 moved = 0;
        if (d.bondedAmount == 0) {
            d.startRound = round + 1;
        } else if (current != _to) {
            require(
                !isRegisteredTranscoder(msg.sender),
                "registered transcoders can't delegate towards other addresses"
            );
            d.startRound = round + 1;
            moved = d.bondedAmount;
            uint256 previous = delegators[current].delegatedAmount;
            delegators[current].delegatedAmount = _sub(previous, moved);
            _syncPool(current, previous, round);
        }

        d.delegateAddress = _to;
        d.bondedAmount += _amount;
        Transcoder storage t = transcoders[_to];
        d.rewardFactorSnapshot = _rewardFactor(t);
        d.feeFactorSnapshot = t.feeFactor;

        uint256 oldStake = delegators[_to].delegatedAmount;
        delegators[_to].delegatedAmount = oldStake + moved + _amount;
        _syncPool(_to, oldStake, round);

        if (_amount > 0) {
            require(
                _token().transferFrom(msg.sender, address(minter()), _amount),
                "token transfer failed"
            );
        }
        emit Bond(_to, current, msg.sender, _amount, d.bondedAmount);
    }

    function unbond(uint256 _amount) external whenSystemNotPaused whenRoundInitialized {
        uint256 round = roundsManager().currentRound();
        Delegator storage d = delegators[msg.sender];
        require(d.bondedAmount > 0, "caller must be bonded");
        require(_amount > 0, "unbond amount must be greater than 0");
        _claimEarnings(msg.sender, round);
        require(_amount <= d.bondedAmount, "amount is greater than bonded amount");

        address delegate = d.delegateAddress;
        uint256 lockId = d.nextUnbondingLockId++;
        uint256 withdrawRound = round + unbondingPeriod;
        d.unbondingLocks[lockId] = UnbondingLock(_amount, withdrawRound);
        d.bondedAmount -= _amount;
        if (d.bondedAmount == 0) {
            d.delegateAddress = address(0);
            d.startRound = 0;
        }
        uint256 oldStake = delegators[delegate].delegatedAmount;
        delegators[delegate].delegatedAmount = _sub(oldStake, _amount);
        _syncPool(delegate, oldStake, round);
        emit Unbond(delegate, msg.sender, lockId, _amount, withdrawRound);
    }

    function rebond(uint256 _unbondingLockId) external whenSystemNotPaused whenRoundInitialized {
        require(delegators[msg.sender].bondedAmount > 0, "caller must be bonded");
        uint256 round = roundsManager().currentRound();
        _claimEarnings(msg.sender, round);
        _processRebond(msg.sender, _unbondingLockId, round);
    }

    function rebondFromUnbonded(address _to, uint256 _unbondingLockId)
        external
        whenSystemNotPaused
        whenRoundInitialized
    {
        require(_to != address(0), "invalid delegate");
        Delegator storage d = delegators[msg.sender];
        require(d.bondedAmount == 0, "caller must be unbonded");
        uint256 round = roundsManager().currentRound();
        d.startRound = round + 1;
        d.delegateAddress = _to;
        d.rewardFactorSnapshot = _rewardFactor(transcoders[_to]);
        d.feeFactorSnapshot = transcoders[_to].feeFactor;
        _processRebond(msg.sender, _unbondingLockId, round);
    }

    function withdrawStake(uint256 _unbondingLockId)
        external
        whenSystemNotPaused
        whenRoundInitialized
    {
        Delegator storage d = delegators[msg.sender];
        require(isValidUnbondingLock(msg.sender, _unbondingLockId), "invalid unbonding lock ID");
        UnbondingLock memory lock = d.unbondingLocks[_unbondingLockId];
        require(
            lock.withdrawRound <= roundsManager().currentRound(),
            "withdraw round must be before or equal to the current round"
        );
        delete d.unbondingLocks[_unbondingLockId];
        minter().trustedTransferTokens(msg.sender, lock.amount);
        emit WithdrawStake(msg.sender, _unbondingLockId, lock.amount, lock.withdrawRound);
    }

    function withdrawFees(address payable _recipient, uint256 _amount)
        external
        whenSystemNotPaused
        whenRoundInitialized
    {
        _claimEarnings(msg.sender, roundsManager().currentRound());
        Delegator storage d = delegators[msg.sender];
        require(d.fees >= _amount, "insufficient fees to withdraw");
        d.fees -= _amount;
        minter().trustedWithdrawETH(_recipient, _amount);
        emit WithdrawFees(msg.sender, _recipient, _amount);
    }

    /// @notice Settle pending stake and fees into the caller's delegator record (the round
    /// argument is ignored).
    function claimEarnings(uint256) external whenSystemNotPaused whenRoundInitialized {
        _claimEarnings(msg.sender, roundsManager().currentRound());
    }

    // ---- views ------------------------------------------------------------------------

    function getTranscoder(address _transcoder)
        external
        view
        returns (
            uint256 lastRewardRound,
            uint256 rewardCut,
            uint256 feeShare,
            uint256 lastActiveStakeUpdateRound,
            uint256 activationRound,
            uint256 deactivationRound,
            uint256 activeCumulativeRewards,
            uint256 cumulativeRewards,
            uint256 cumulativeFees,
            uint256 lastFeeRound
        )
    {
        Transcoder storage t = transcoders[_transcoder];
        return (
            t.lastRewardRound,
            t.rewardCut,
            t.feeShare,
            t.lastActiveStakeUpdateRound,
            t.activationRound,
            t.deactivationRound,
            t.activeCumulativeRewards,
            t.cumulativeRewards,
            t.cumulativeFees,
            t.lastFeeRound
        );
    }

    function getDelegator(address _delegator)
        external
        view
        returns (
            uint256 bondedAmount,
            uint256 fees,
            address delegateAddress,
            uint256 delegatedAmount,
            uint256 startRound,
            uint256 lastClaimRound,
            uint256 nextUnbondingLockId
        )
    {
        Delegator storage d = delegators[_delegator];
        return (
            d.bondedAmount,
            d.fees,
            d.delegateAddress,
            d.delegatedAmount,
            d.startRound,
            d.lastClaimRound,
            d.nextUnbondingLockId
        );
    }

    function getDelegatorUnbondingLock(address _delegator, uint256 _unbondingLockId)
        external
        view
        returns (uint256 amount, uint256 withdrawRound)
    {
        UnbondingLock storage lock = delegators[_delegator].unbondingLocks[_unbondingLockId];
        return (lock.amount, lock.withdrawRound);
    }

    function isValidUnbondingLock(address _delegator, uint256 _unbondingLockId)
        public
        view
        returns (bool)
    {
        return delegators[_delegator].unbondingLocks[_unbondingLockId].withdrawRound > 0;
    }

    /// @notice Stake including unclaimed rewards (the round argument is ignored).
    function pendingStake(address _delegator, uint256) external view returns (uint256) {
        (uint256 stake, ) = _pendingEarnings(_delegator);
        return stake;
    }

    /// @notice Fees including unclaimed ones (the round argument is ignored).
    function pendingFees(address _delegator, uint256) external view returns (uint256) {
        (, uint256 fees) = _pendingEarnings(_delegator);
        return fees;
    }

    function transcoderTotalStake(address _transcoder) external view returns (uint256) {
        return delegators[_transcoder].delegatedAmount;
    }

    function getTotalBonded() external view returns (uint256) {
        return currentRoundTotalActiveStake;
    }

    function isRegisteredTranscoder(address _transcoder) public view returns (bool) {
        Delegator storage d = delegators[_transcoder];
        return d.delegateAddress == _transcoder && d.bondedAmount > 0;
    }

    function isActiveTranscoder(address _transcoder) public view returns (bool) {
        Transcoder storage t = transcoders[_transcoder];
        uint256 round = roundsManager().currentRound();
        return t.activationRound > 0 && t.activationRound <= round && round < t.deactivationRound;
    }

    function transcoderStatus(address _transcoder) external view returns (TranscoderStatus) {
        return isRegisteredTranscoder(_transcoder) ? TranscoderStatus.Registered : TranscoderStatus.NotRegistered;
    }

    function delegatorStatus(address _delegator) external view returns (DelegatorStatus) {
        Delegator storage d = delegators[_delegator];
        if (d.bondedAmount == 0) {
            return DelegatorStatus.Unbonded;
        }
        if (d.startRound > roundsManager().currentRound()) {
            return DelegatorStatus.Pending;
        }
        return DelegatorStatus.Bonded;
    }

    function getTranscoderPoolSize() external view returns (uint256) {
        return pool.length;
    }

    function getTranscoderPoolMaxSize() external view returns (uint256) {
        return numActiveTranscoders;
    }

    function getFirstTranscoderInPool() external view returns (address) {
        return pool.length == 0 ? address(0) : pool[0];
    }

    function getNextTranscoderInPool(address _transcoder) external view returns (address) {
        for (uint256 i = 0; i + 1 < pool.length; i++) {
            if (pool[i] == _transcoder) {
                return pool[i + 1];
            }
        }
        return address(0);
    }

    // ---- internals --------------------------------------------------------------------

    function _token() private view returns (ILivepeerToken) {
        return ILivepeerToken(_lookup("LivepeerToken"));
    }

    function _sub(uint256 _a, uint256 _b) private pure returns (uint256) {
        return _b > _a ? 0 : _a - _b;
    }

    function _rewardFactor(Transcoder storage _t) private view returns (uint256) {
        return _t.rewardFactor == 0 ? PRECISE : _t.rewardFactor;
    }

    function _activeStake(Transcoder storage _t, uint256 _round) private view returns (uint256) {
        return _t.lastActiveStakeUpdateRound <= _round ? _t.nextActiveStake : _t.prevActiveStake;
    }

    function _setActiveStake(address _transcoder, uint256 _stake, uint256 _round) private {
        Transcoder storage t = transcoders[_transcoder];
        if (t.lastActiveStakeUpdateRound <= _round) {
            t.prevActiveStake = t.nextActiveStake;
        }
        t.nextActiveStake = _stake;
        t.lastActiveStakeUpdateRound = _round + 1;
    }

    function _pendingEarnings(address _delegator)
        private
        view
        returns (uint256 stake, uint256 fees)
    {
        Delegator storage d = delegators[_delegator];
        stake = d.bondedAmount;
        fees = d.fees;
        address delegate = d.delegateAddress;
        if (delegate == address(0)) {
            return (stake, fees);
        }
        Transcoder storage t = transcoders[delegate];
        if (stake > 0) {
            uint256 snapshot = d.rewardFactorSnapshot == 0 ? PRECISE : d.rewardFactorSnapshot;
            fees += (stake * (t.feeFactor - d.feeFactorSnapshot)) / snapshot;
            stake = (stake * _rewardFactor(t)) / snapshot;
        }
        if (delegate == _delegator) {
            stake += t.cumulativeRewards;
            fees += t.cumulativeFees;
        }
    }

    function _claimEarnings(address _delegator, uint256 _round) private {
        Delegator storage d = delegators[_delegator];
        address delegate = d.delegateAddress;
        if (delegate != address(0)) {
            (uint256 stake, uint256 fees) = _pendingEarnings(_delegator);
            d.bondedAmount = stake;
            d.fees = fees;
            Transcoder storage t = transcoders[delegate];
            if (delegate == _delegator) {
                t.cumulativeRewards = 0;
                t.cumulativeFees = 0;
            }
            d.rewardFactorSnapshot = _rewardFactor(t);
            d.feeFactorSnapshot = t.feeFactor;
        }
        d.lastClaimRound = _round;
    }

    function _processRebond(address _delegator, uint256 _unbondingLockId, uint256 _round) private {
        Delegator storage d = delegators[_delegator];
        require(isValidUnbondingLock(_delegator, _unbondingLockId), "invalid unbonding lock ID");
        uint256 amount = d.unbondingLocks[_unbondingLockId].amount;
        delete d.unbondingLocks[_unbondingLockId];
        address delegate = d.delegateAddress;
        d.bondedAmount += amount;
        uint256 oldStake = delegators[delegate].delegatedAmount;
        delegators[delegate].delegatedAmount = oldStake + amount;
        _syncPool(delegate, oldStake, _round);
        emit Rebond(delegate, _delegator, _unbondingLockId, amount);
    }

    /// @dev Keep the pool and next round's total active stake in step with a change of a
    /// transcoder's delegated stake (or registration).
    function _syncPool(address _transcoder, uint256 _oldStake, uint256 _round) private {
        bool registered = isRegisteredTranscoder(_transcoder);
        if (inPool[_transcoder]) {
            if (!registered) {
                _removeFromPool(_transcoder);
                nextRoundTotalActiveStake = _sub(nextRoundTotalActiveStake, _oldStake);
                _deactivate(_transcoder, _round);
                return;
            }
            uint256 newStake = delegators[_transcoder].delegatedAmount;
            nextRoundTotalActiveStake = nextRoundTotalActiveStake - _oldStake + newStake;
            _setActiveStake(_transcoder, newStake, _round);
            _removeFromPool(_transcoder);
            _insertIntoPool(_transcoder);
        } else if (registered) {
            _tryToJoinActiveSet(_transcoder, _round);
        }
    }

    function _tryToJoinActiveSet(address _transcoder, uint256 _round) private {
        uint256 stake = delegators[_transcoder].delegatedAmount;
        if (numActiveTranscoders == 0) {
            return;
        }
        if (pool.length >= numActiveTranscoders) {
            address last = pool[pool.length - 1];
            uint256 lastStake = delegators[last].delegatedAmount;
            if (stake <= lastStake) {
                return;
            }
            _removeFromPool(last);
            nextRoundTotalActiveStake = _sub(nextRoundTotalActiveStake, lastStake);
            _deactivate(last, _round);
        }
        _insertIntoPool(_transcoder);
        nextRoundTotalActiveStake += stake;
        _setActiveStake(_transcoder, stake, _round);
        Transcoder storage t = transcoders[_transcoder];
        t.activationRound = _round + 1;
        t.deactivationRound = type(uint256).max;
        emit TranscoderActivated(_transcoder, _round + 1);
    }

    function _deactivate(address _transcoder, uint256 _round) private {
        _setActiveStake(_transcoder, 0, _round);
        transcoders[_transcoder].deactivationRound = _round + 1;
        emit TranscoderDeactivated(_transcoder, _round + 1);
    }

    function _insertIntoPool(address _transcoder) private {
        uint256 stake = delegators[_transcoder].delegatedAmount;
        pool.push(_transcoder);
        uint256 i = pool.length - 1;
        while (i > 0 && delegators[pool[i - 1]].delegatedAmount < stake) {
            pool[i] = pool[i - 1];
            i--;
        }
        pool[i] = _transcoder;
        inPool[_transcoder] = true;
    }

    function _removeFromPool(address _transcoder) private {
        uint256 n = pool.length;
        for (uint256 i = 0; i < n; i++) {
            if (pool[i] == _transcoder) {
                for (uint256 j = i; j + 1 < n; j++) {
                    pool[j] = pool[j + 1];
                }
                pool.pop();
                break;
            }
        }
        inPool[_transcoder] = false;
    }
}
